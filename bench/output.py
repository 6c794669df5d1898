"""What every benchmark part writes beside its table: its targets, one JSON document."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Target:
    """One target of a benchmark: what it asks, whether this run met it, and the figure."""

    what: str
    met: bool
    figure: str


def write_json(
    path: Path, part: str, *, started: datetime, cores: int, command: str, elapsed_s: float,
    **figures: Any,
) -> None:  # fmt: skip
    doc = {
        "part": part,
        "date": started.isoformat(timespec="seconds"),
        "cores": cores,
        "command": command,
        "elapsed_s": round(elapsed_s, 2),
        **figures,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"\nwrote {path}", file=sys.stderr)
