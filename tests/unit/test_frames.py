"""The hand-packed publish frames are exactly pika's, for every shape smartgrid publishes."""

from __future__ import annotations

import pika
import pika.frame
import pika.spec
import pytest

from messaging.frames import PublishFrames

BODY_MAX = 131072 - 8


def _pika(
    channel: int,
    exchange: str,
    routing_key: str,
    body: bytes,
    *,
    mandatory: bool,
    persistent: bool,
    message_id: str | None,
    app_id: str | None,
) -> bytes:
    props = pika.BasicProperties(
        content_type="application/json",
        delivery_mode=2 if persistent else 1,
        message_id=message_id,
        app_id=app_id,
    )
    publish = pika.spec.Basic.Publish(
        exchange=exchange, routing_key=routing_key, mandatory=mandatory
    )
    return b"".join(
        [
            pika.frame.Method(channel, publish).marshal(),
            pika.frame.Header(channel, len(body), props).marshal(),
            pika.frame.Body(channel, body).marshal(),
        ]
    )


@pytest.mark.parametrize("persistent", [True, False])
@pytest.mark.parametrize("message_id", [None, "5f0c1b8e-3a0d-4c1e-9d4b-0a1b2c3d4e5f", "ü-ünïcode"])
@pytest.mark.parametrize("app_id", [None, "smartgrid-dispatcher-0a1b2c3d"])
@pytest.mark.parametrize("size", [1, 476, BODY_MAX])
def test_the_frames_are_pikas(
    persistent: bool, message_id: str | None, app_id: str | None, size: int
) -> None:
    body = bytes(i % 251 for i in range(size))
    for channel, mandatory in [(1, True), (7, False)]:
        frames = PublishFrames(channel)
        want = _pika(
            channel, "ns.substations", "north-300", body, mandatory=mandatory,
            persistent=persistent, message_id=message_id, app_id=app_id,
        )  # fmt: skip
        for _ in range(2):  # the second from the method-frame cache
            got = frames.encode(
                "ns.substations", "north-300", body, mandatory=mandatory,
                persistent=persistent, message_id=message_id, app_id=app_id, body_max=BODY_MAX,
            )  # fmt: skip
            assert got == want


def test_the_method_frame_cache_keys_on_every_field() -> None:
    frames = PublishFrames(1)
    for exchange, key, mandatory in [("a", "k", True), ("a", "k", False), ("b", "k", True)]:
        got = frames.encode(
            exchange, key, b"{}", mandatory=mandatory, persistent=True, message_id=None,
            app_id=None, body_max=BODY_MAX,
        )  # fmt: skip
        want = _pika(
            1, exchange, key, b"{}", mandatory=mandatory, persistent=True, message_id=None,
            app_id=None,
        )  # fmt: skip
        assert got == want


@pytest.mark.parametrize(
    ("body", "message_id"),
    [
        (b"", None),  # no body frame at all
        (b"x" * (BODY_MAX + 1), None),  # two body frames
        (b"{}", "m" * 256),  # longer than a short string: pika raises the error
    ],
)
def test_what_it_does_not_pack_is_left_to_pika(body: bytes, message_id: str | None) -> None:
    got = PublishFrames(1).encode(
        "x", "k", body, mandatory=True, persistent=True, message_id=message_id, app_id=None,
        body_max=BODY_MAX,
    )  # fmt: skip
    assert got is None
