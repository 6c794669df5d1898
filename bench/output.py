"""What every benchmark part writes beside its table: one JSON document."""

from __future__ import annotations

import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Any


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
