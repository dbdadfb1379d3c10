"""Caption and JSON members of a sample: untrusted bytes to text, problems as warnings.

Used by the shard reader; nothing here raises on bad input.
"""

from __future__ import annotations

import codecs
import json
from typing import Any

__all__ = ["MAX_JSON_DEPTH", "decode_caption", "json_depth_exceeds", "parse_meta"]

# Deeper JSON is refused before parsing: json's C parser recurses per level (RecursionError,
# or a stack overflow under a lower limit in another process), and readers downstream
# (Jackson in Spark: 1000 levels) have limits of their own. img2dataset's JSON is 1-2 deep.
MAX_JSON_DEPTH = 64


def decode_caption(raw: bytes, truncated: bool) -> tuple[str, list[str]]:
    """Caption text plus warnings; a character cut in half by truncation is dropped."""
    warnings = ["caption_truncated"] if truncated else []
    try:
        if truncated:
            decoder = codecs.getincrementaldecoder("utf-8")("strict")
            return decoder.decode(raw, final=False), warnings
        return raw.decode("utf-8"), warnings
    except UnicodeDecodeError:
        return raw.decode("utf-8", errors="replace"), [*warnings, "caption_not_utf8"]


def json_depth_exceeds(text: str, limit: int) -> bool:
    """True when brackets outside strings nest deeper than ``limit`` (a linear scan, no parse)."""
    if text.count("[") + text.count("{") <= limit:
        return False  # the common case: too few brackets to nest that deep
    depth, in_string, escaped = 0, False, False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > limit:
                return True
        elif ch in "]}":
            depth -= 1
    return False


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_meta(raw: bytes) -> str | None:
    """The original JSON text when it is valid UTF-8 JSON (NaN/Infinity rejected) nested at
    most MAX_JSON_DEPTH deep, else None."""
    try:
        text = raw.decode("utf-8")
        if json_depth_exceeds(text, MAX_JSON_DEPTH):
            return None
        json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError included
        return None
    return text
