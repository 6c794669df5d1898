"""The gateway's HTTP stack without a broker: the same app and uvicorn config, 202 at once.

``python -m bench.throughput.nobroker --port N``: what the HTTP layer alone can do on this
machine (validation, idempotency memory, metrics, uvicorn + uvloop + httptools), the reference
the real gateway is compared with. Never a product path: it accepts without storing anything.
"""

from __future__ import annotations

import argparse

from contracts import ChargeRequest
from gateway.__main__ import _server_class, uvicorn_config
from gateway.app import create_app
from gateway.settings import GatewaySettings
from messaging.runtime import freeze_startup_heap


class NoBrokerPublisher:
    """Answers every publish at once, as if the broker had confirmed it."""

    connected = True

    async def publish(self, request: ChargeRequest) -> None:
        return None


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--port", type=int, required=True)
    args = p.parse_args(argv)
    settings = GatewaySettings(http_port=args.port, log_level="WARNING")
    app = create_app(settings, NoBrokerPublisher())
    freeze_startup_heap()  # as the gateway does: the same heap treatment on both sides
    _server_class()(uvicorn_config(app, settings)).run()


if __name__ == "__main__":
    main()
