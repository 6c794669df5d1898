"""The HTTP API: POST /v1/charge-requests, GET /healthz, GET /metrics (+ /docs, /openapi.json).

A request is answered 202 only after the broker confirmed it. Everything that can be refused
without the broker (size, media type, key, a body too slow, contract validation, a conflicting
retry) is refused before anything is published, so an invalid request never reaches a queue.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Literal
from uuid import UUID

from fastapi import FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import BaseModel, ValidationError
from starlette.requests import ClientDisconnect
from starlette.types import Receive

from contracts import ChargeRequest
from gateway.deadlines import Deadlines
from gateway.idempotency import Conflict, RecentRequests, request_id_for_key
from gateway.metrics import GatewayMetrics
from gateway.publisher import ManagedPublisher, RequestPublisher
from gateway.ratelimit import TokenBucket, retry_after_header
from gateway.settings import GatewaySettings
from messaging import MessagingError

log = logging.getLogger(__name__)

JSON = "application/json"
IDEMPOTENCY_HEADER = "Idempotency-Key"
# Extra time the HTTP layer allows beyond the publisher's own confirm timeout, so a publisher
# that fails to enforce it still cannot hang a request.
PUBLISH_GUARD_S = 1.0
# Counted for a client that went away before its request was complete; never sent (nginx's
# "client closed request").
CLIENT_CLOSED = 499
# A body that stopped arriving leaves the connection mid-request: it cannot serve another.
_CLOSE = {"Connection": "close"}


# -- response shapes (documented in OpenAPI) ---------------------------------------------------


class Accepted(BaseModel):
    request_id: UUID
    status: Literal["accepted"] = "accepted"


class FieldError(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class ValidationFailed(BaseModel):
    detail: list[FieldError]


class Problem(BaseModel):
    detail: str


_RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before retrying (with the same request_id).",
        "schema": {"type": "integer"},
    }
}


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(
        json.dumps(body, separators=(",", ":")).encode(), status, headers, media_type=JSON
    )


def _is_json(content_type: str | None) -> bool:
    # "application/json; charset=utf-8" is fine; anything else is not JSON to us.
    return content_type is not None and content_type.split(";", 1)[0].strip().lower() == JSON


def _declared_too_large(request: Request, limit: int) -> bool:
    length = request.headers.get("content-length")
    return length is not None and length.strip().isdigit() and int(length) > limit


async def _read_capped(receive: Receive, limit: int) -> bytes | None:
    """The body, or None once more than ``limit`` bytes arrived (chunked bodies too).

    Raises ClientDisconnect if the client went away first.
    """
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise ClientDisconnect
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _peer(request: Request) -> str:
    client = request.client
    return f"{client.host}:{client.port}" if client else "?"


def _key_matches(request: Request, expected: bytes) -> bool:
    given = request.headers.get("x-api-key")
    if given is None:
        auth = request.headers.get("authorization", "")
        scheme, _, token = auth.partition(" ")
        given = token.strip() if scheme.lower() == "bearer" else None
    # Constant time: how much of a guess matched must not show in the answer's timing.
    return given is not None and hmac.compare_digest(given.encode(), expected)


def _accepted(charge: ChargeRequest) -> Response:
    return Response(
        b'{"request_id":"%s","status":"accepted"}' % str(charge.request_id).encode(),
        202,
        media_type=JSON,
    )


def _field_errors(exc: ValidationError) -> list[dict[str, Any]]:
    # loc/msg/type only: echoing "input" back could reflect a large or sensitive body.
    return [
        {"loc": ["body", *e["loc"]], "msg": e["msg"], "type": e["type"]}
        for e in exc.errors(include_url=False, include_input=False, include_context=False)
    ]


def create_app(
    settings: GatewaySettings,
    publisher: RequestPublisher,
    registry: CollectorRegistry | None = None,
) -> FastAPI:
    """Build the API around ``publisher`` (started and stopped by the lifespan if it has one)."""
    metrics = GatewayMetrics(registry if registry is not None else CollectorRegistry())
    metrics.broker_connected.set_function(lambda: 1.0 if publisher.connected else 0.0)

    def broker_node() -> str | None:
        """The node a publisher that knows it (``broker_node``, host:port) is connected to."""
        node = getattr(publisher, "broker_node", None)
        return node if publisher.connected and isinstance(node, str) else None

    metrics.broker_node.follow(broker_node)
    retry_after = {"Retry-After": str(settings.retry_after_s)}
    max_body = settings.max_body_bytes
    max_key = settings.max_idempotency_key_chars
    # A client that stops sending its body must not hold a request (and its memory) open.
    body_deadlines = Deadlines(settings.body_timeout_s)
    api_key = settings.api_key.get_secret_value().encode() if settings.api_key else None
    bucket = (
        TokenBucket(settings.rate_limit_per_s, settings.rate_limit_burst, time.monotonic())
        if settings.rate_limit_per_s > 0
        else None
    )
    recent = RecentRequests(settings.idempotency_memory)
    # Outer bound on a publish, whatever the publisher does.
    publish_deadline_s = settings.confirm_timeout_s + PUBLISH_GUARD_S

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        managed = publisher if isinstance(publisher, ManagedPublisher) else None
        if managed is not None:
            await managed.start()
        try:
            yield
        finally:
            if managed is not None:
                await managed.stop()

    app = FastAPI(
        title="smartgrid gateway",
        version="1",
        description="Accepts EV charge requests and hands them to the grid over RabbitMQ. "
        "202 means the broker has durably stored the request.",
        lifespan=lifespan,
    )
    app.state.metrics = metrics
    app.state.publisher = publisher
    app.state.settings = settings

    def unavailable(reason: str) -> Response:
        return _json(503, {"detail": reason}, retry_after)

    async def handle(request: Request) -> Response:
        if api_key is not None and not _key_matches(request, api_key):
            return _json(
                401, {"detail": "missing or wrong API key"}, {"WWW-Authenticate": "Bearer"}
            )
        if bucket is not None:
            wait_s = bucket.take(time.monotonic())
            if wait_s > 0:
                return _json(
                    429,
                    {"detail": "rate limit reached; retry later"},
                    {"Retry-After": retry_after_header(wait_s)},
                )
        if _declared_too_large(request, max_body):
            return _json(413, {"detail": f"body larger than {max_body} bytes"})
        if not _is_json(request.headers.get("content-type")):
            return _json(415, {"detail": f"Content-Type must be {JSON}"})
        key = request.headers.get(IDEMPOTENCY_HEADER)
        if key is not None:
            key = key.strip()
            # 400, not 422: the header is malformed, while 422 says which body fields break
            # the contract. Keys are UUID-like; a long one would only cost memory and hashing.
            if len(key) > max_key:
                too_long = f"{IDEMPOTENCY_HEADER} longer than {max_key} characters"
                return _json(400, {"detail": too_long})
        try:
            raw = await body_deadlines.within(lambda: _read_capped(request.receive, max_body))
        except TimeoutError:
            late = f"body not received within {body_deadlines.timeout_s:g}s"
            return _json(408, {"detail": late}, _CLOSE)
        if raw is None:
            return _json(413, {"detail": f"body larger than {max_body} bytes"})
        try:
            charge = ChargeRequest.model_validate_json(raw)
        except ValidationError as exc:
            return _json(422, {"detail": _field_errors(exc)})
        if key is not None:
            rid = request_id_for_key(key)
            if "request_id" in charge.model_fields_set and charge.request_id != rid:
                return _json(
                    422,
                    {"detail": f"{IDEMPOTENCY_HEADER} names request_id {rid}, the body another"},
                )
            charge = charge.model_copy(update={"request_id": rid})
        fingerprint = charge.fingerprint()
        try:
            if recent.confirmed(charge.request_id, fingerprint):
                metrics.replays.inc()
                return _accepted(charge)
            if not publisher.connected:
                return unavailable("not connected to the broker; retry later")
            started = time.perf_counter()
            with metrics.inflight_publishes.track_inprogress():
                async with asyncio.timeout(publish_deadline_s):
                    published = await recent.once(
                        charge.request_id, fingerprint, lambda: publisher.publish(charge)
                    )
        except Conflict:
            # A different request under a used id, confirmed or in flight: publishing it would
            # either be dropped downstream as a duplicate or replace what was accepted.
            used = f"request_id {charge.request_id} was already used with a different body"
            return _json(409, {"detail": used})
        except TimeoutError:
            log.warning("publish of %s exceeded %.1fs", charge.request_id, publish_deadline_s)
            return unavailable("the broker did not confirm in time; retry later")
        except MessagingError as exc:
            log.info("request %s not accepted: %s", charge.request_id, exc)
            return unavailable(f"the broker did not take the request ({type(exc).__name__})")
        if published:
            metrics.publish_seconds.observe(time.perf_counter() - started)
        else:
            metrics.replays.inc()
        return _accepted(charge)

    @app.post(
        "/v1/charge-requests",
        status_code=202,
        response_model=Accepted,
        summary="Submit a charge request",
        description="The body is a ChargeRequest (contract v1). `request_id` is the idempotency "
        "key: generated when omitted; retry a 503 with the same one (or send an "
        "`Idempotency-Key` header: any string up to the configured length, mapped to the "
        "request_id). A retry must repeat the body: the same request_id with another vehicle, "
        "energy, power, departure or priority is a conflict (409).",
        responses={
            400: {"model": Problem, "description": "Idempotency-Key longer than accepted."},
            401: {"model": Problem, "description": "API key required (X-API-Key or Bearer)."},
            408: {
                "model": Problem,
                "description": "The body did not all arrive in time: nothing was accepted.",
            },
            409: {
                "model": Problem,
                "description": "The request_id (or Idempotency-Key) was already used with a "
                "different body: nothing was published. A retry must repeat the body.",
            },
            413: {"model": Problem, "description": "Body larger than the gateway accepts."},
            415: {"model": Problem, "description": f"Content-Type is not {JSON}."},
            422: {"model": ValidationFailed, "description": "Not a valid ChargeRequest."},
            429: {
                "model": Problem,
                "description": "Rate limit reached: nothing was accepted.",
                "headers": _RETRY_AFTER,
            },
            503: {
                "model": Problem,
                "description": "Broker unavailable, or it did not confirm: nothing was accepted.",
                "headers": _RETRY_AFTER,
            },
        },
        # The body is read and validated by hand (size cap, one fast parse), so FastAPI cannot
        # infer it: document ChargeRequest's JSON Schema explicitly for /docs.
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {JSON: {"schema": ChargeRequest.model_json_schema()}},
            }
        },
    )
    async def submit_charge_request(request: Request) -> Response:
        try:
            response = await handle(request)
        except ClientDisconnect:
            # Gone before its request was complete: nothing was published, nobody is left to
            # answer, and it is not a server error.
            log.info("client %s disconnected mid-request; nothing published", _peer(request))
            metrics.requests.labels(str(CLIENT_CLOSED)).inc()
            return Response(status_code=CLIENT_CLOSED)
        except Exception:
            metrics.requests.labels("500").inc()
            raise
        metrics.requests.labels(str(response.status_code)).inc()
        return response

    @app.get(
        "/healthz",
        summary="Liveness and broker connectivity",
        responses={503: {"description": "Not connected to the broker."}},
    )
    async def healthz() -> Response:
        node = broker_node()
        if node is not None:
            return _json(200, {"status": "ok", "broker": "connected", "node": node})
        if publisher.connected:
            return _json(200, {"status": "ok", "broker": "connected"})
        return _json(503, {"status": "unavailable", "broker": "disconnected"}, retry_after)

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def prometheus_metrics() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app
