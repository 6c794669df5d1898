"""How a validation error reads, wherever one is reported (a dead letter's reason, a log line,
a refused setting): one ``where: what`` per error, ``where`` being the field's dotted path, or
what the whole value is when the error is not tied to one field."""

from __future__ import annotations

from pydantic import ValidationError

# A reason travels in a header and an event: long enough to tell, short enough to carry.
MAX_SUMMARY_CHARS = 900


def error_lines(exc: ValidationError, whole: str = "body") -> list[str]:
    """``field.path: message`` per error; ``whole`` names the value for errors of no field."""
    return [f"{'.'.join(str(p) for p in e['loc']) or whole}: {e['msg']}" for e in exc.errors()]


def summary(exc: ValidationError, whole: str = "body") -> str:
    """The errors on one line, cut at MAX_SUMMARY_CHARS."""
    return "; ".join(error_lines(exc, whole))[:MAX_SUMMARY_CHARS]
