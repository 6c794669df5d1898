"""JSON Schema export of every message, for clients that publish without this package."""

from __future__ import annotations

import json
from typing import Any

from contracts.messages import MESSAGES, SCHEMA_VERSION


def json_schemas() -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name, model in MESSAGES.items():
        schema = model.model_json_schema()
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["$id"] = f"https://smartgrid.example/schemas/v{SCHEMA_VERSION}/{name}.json"
        out[name] = schema
    return out


def render(name: str) -> str:
    return json.dumps(json_schemas()[name], indent=2, sort_keys=True) + "\n"
