#!/usr/bin/env bash
# Measure the gateway alone: POST /v1/charge-requests at a fixed concurrency, every 202 confirmed.
# Starts its own gateway on a throwaway namespace and deletes that namespace afterwards.
# Bounded: REQUESTS requests (httpx fallback) or DURATION seconds (wrk), never more.
#   bench/gateway_load.sh                      # 5000 requests, 64 concurrent
#   REQUESTS=20000 CONCURRENCY=128 bench/gateway_load.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
PORT=${PORT:-18765}
REQUESTS=${REQUESTS:-5000}
CONCURRENCY=${CONCURRENCY:-64}
DURATION=${DURATION:-10}
NS="bench-gw-$$"
URL="http://127.0.0.1:${PORT}"

SMARTGRID_NAMESPACE=$NS .venv/bin/smartgrid-gateway --port "$PORT" --log-level WARNING &
GW=$!
cleanup() {
  kill -TERM "$GW" 2>/dev/null || true
  wait "$GW" 2>/dev/null || true
  "$PY" - "$NS" <<'PY'
import asyncio, sys
from contracts import Topology
from messaging import AmqpSettings, Session

async def main(ns: str) -> None:
    s = await Session.open(AmqpSettings(), "bench-cleanup")
    topo = Topology(ns)
    for q in (topo.requests_queue, topo.dead_queue):
        await s.delete_queue(q)
    for ex in topo.exchanges():
        await s.delete_exchange(ex.name)
    await s.close()

asyncio.run(main(sys.argv[1]))
PY
}
trap cleanup EXIT

for _ in $(seq 100); do curl -sf -o /dev/null "$URL/healthz" && break; sleep 0.1; done
curl -sf -o /dev/null "$URL/healthz" || { echo "gateway not healthy (is RabbitMQ up?)" >&2; exit 1; }

if command -v wrk >/dev/null; then
  LUA=$(mktemp)
  cat >"$LUA" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"vehicle_id":"EV-bench","energy_kwh":20,"max_power_kw":50}'
LUA
  wrk -t2 -c"$CONCURRENCY" -d"${DURATION}s" --latency -s "$LUA" "$URL/v1/charge-requests"
  rm -f "$LUA"
else
  echo "wrk not installed: measuring with httpx ($REQUESTS requests, $CONCURRENCY concurrent)"
  "$PY" - "$URL" "$REQUESTS" "$CONCURRENCY" <<'PY'
import asyncio, statistics, sys, time
import httpx

url, total, conc = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
body = b'{"vehicle_id":"EV-bench","energy_kwh":20,"max_power_kw":50}'

async def main() -> None:
    lat: list[float] = []
    codes: dict[int, int] = {}
    todo = iter(range(total))
    limits = httpx.Limits(max_connections=conc, max_keepalive_connections=conc)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as c:
        async def worker() -> None:
            for _ in todo:
                t = time.perf_counter()
                r = await c.post("/v1/charge-requests", content=body,
                                 headers={"content-type": "application/json"})
                lat.append(time.perf_counter() - t)
                codes[r.status_code] = codes.get(r.status_code, 0) + 1
        t0 = time.perf_counter()
        await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(conc))), 600)
        wall = time.perf_counter() - t0
    q = statistics.quantiles(lat, n=100)
    print(f"{total} requests in {wall:.2f}s = {total / wall:.0f} req/s; status {codes}")
    print(f"latency p50 {q[49] * 1e3:.1f} ms  p90 {q[89] * 1e3:.1f} ms  p99 {q[98] * 1e3:.1f} ms")

asyncio.run(main())
PY
fi
curl -s "$URL/metrics" | grep -E '^smartgrid_gateway_(requests_total|publish_seconds_(sum|count))'
