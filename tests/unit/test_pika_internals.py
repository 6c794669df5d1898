"""What messaging relies on inside pika, checked at once: if a pika release changes any of it,
this fails before anything subtler does. messaging/frames.py writes Basic.Publish frames itself
(tests/unit/test_frames.py checks its bytes against pika's encoder) and Session's connection
batches pika's writes by overriding a private method; pyproject pins pika below its next minor
version for that reason."""

from __future__ import annotations

import inspect
import tomllib
from importlib.metadata import version
from pathlib import Path

import pika
from packaging.specifiers import SpecifierSet
from pika.adapters.asyncio_connection import AsyncioConnection
from pika.adapters.base_connection import BaseConnection
from pika.connection import Connection

from messaging.session import _BatchingConnection

ROOT = Path(__file__).resolve().parents[2]


def pika_requirement() -> SpecifierSet:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    (spec,) = [d for d in deps if d.startswith("pika")]
    return SpecifierSet(spec.removeprefix("pika"))


def test_pika_is_pinned_below_its_next_minor_version() -> None:
    spec = pika_requirement()
    installed = version("pika")
    major, minor = (int(p) for p in installed.split(".")[:2])
    assert installed in spec
    assert f"{major}.{minor + 1}.0" not in spec, f"pika {spec} admits the next minor version"


def test_the_batching_connection_overrides_the_write_pika_makes() -> None:
    """Every frame pika sends goes through BaseConnection._adapter_emit_data (that is what
    _BatchingConnection joins per loop turn), and the transport is ``_transport``."""
    assert "_adapter_emit_data" in vars(BaseConnection)
    assert issubclass(_BatchingConnection, AsyncioConnection)
    assert "_adapter_emit_data" in vars(_BatchingConnection)
    writes = inspect.getsource(vars(Connection)["_output_marshaled_frames"])
    assert "_adapter_emit_data" in writes
    assert "self._transport" in inspect.getsource(BaseConnection)


def test_the_counters_frames_written_elsewhere_update_exist() -> None:
    """PublishFrames' bytes bypass pika's _send_frame: Session counts them in pika's own
    counters, which pika sets up here."""
    setup = inspect.getsource(vars(Connection)["_init_connection_state"])
    assert "self.bytes_sent" in setup
    assert "self.frames_sent" in setup


def test_the_negotiated_frame_size_is_where_session_reads_it() -> None:
    params = pika.ConnectionParameters()
    assert isinstance(params.frame_max, int)
    assert pika.spec.FRAME_HEADER_SIZE == 7
    assert pika.spec.FRAME_END_SIZE == 1
