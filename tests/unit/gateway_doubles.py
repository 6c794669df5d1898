"""The gateway without a broker, for its unit tests: a fake publisher, request bodies, an
in-process HTTP client."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
from fastapi import FastAPI

from contracts import ChargeRequest
from gateway import GatewaySettings
from tests.helpers import charge_request_body

URL = "/v1/charge-requests"
JSON = {"content-type": "application/json"}


class FakePublisher:
    """Records what it was asked to publish; can pretend to be down, fail, or hang."""

    def __init__(self) -> None:
        self.connected = True
        self.broker_node: str | None = "broker.test:5672"
        self.error: Exception | None = None
        self.hang = False
        self.release = asyncio.Event()  # with hang: publishes wait until this is set
        self.waiting = 0
        self.received: list[ChargeRequest] = []

    async def publish(self, request: ChargeRequest) -> None:
        if self.error is not None:
            raise self.error
        if self.hang:
            self.waiting += 1
            try:
                await self.release.wait()
            finally:
                self.waiting -= 1
        self.received.append(request)


def raw_body(**overrides: Any) -> bytes:
    return json.dumps(charge_request_body(**overrides)).encode()


def settings(**overrides: Any) -> GatewaySettings:
    return GatewaySettings(namespace="unit-gateway", **overrides)


def http(app: FastAPI) -> httpx.AsyncClient:
    # The fake has no lifecycle, so the app's lifespan has nothing to start.
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway")
