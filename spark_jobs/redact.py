"""Keep secrets out of everything a job prints or writes: masks values of secret-looking keys.

Object-store credentials reach Spark through `spark.conf` (e.g.
`spark.hadoop.fs.s3a.secret.key`). They must reach Spark's configuration, but never a log
line, a summary, an error message, catalog.sql or the report. `redact` masks a mapping's
secret values (by key name) or, in a text, `key=value` / `key: value` pairs and every value
remembered with `remember_secrets` (values known to be secret, wherever they appear).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any, overload

MASK = "***"

# A key is secret when any of these matches it (case-insensitive), anywhere in the key.
SECRET_KEY_PATTERNS: tuple[str, ...] = (
    r"secret",
    r"passw(or)?d",
    r"token",
    r"credential",
    r"access[._-]?key",
    r"account[._-]?key",
    r"private[._-]?key",
    r"api[._-]?key",
    r"sas[._-]?key",
    r"signature",
)
_SECRET_KEY = re.compile("|".join(SECRET_KEY_PATTERNS), re.IGNORECASE)
# `key=value`, `key: value`, `"key": "value"` with a secret key (free text is left alone).
_PAIR = re.compile(
    r"""(?P<key>["']?[\w.\-\[\]]*(?:"""
    + "|".join(SECRET_KEY_PATTERNS)
    + r""")[\w.\-\[\]]*["']?)(?P<sep>\s*[:=]\s*)(?P<q>["']?)(?P<value>[^\s"',}]+)""",
    re.IGNORECASE,
)
# Shorter values are not remembered: masking "1", "true" or "local" everywhere helps nobody.
_MIN_SECRET_LEN = 8
_known: set[str] = set()


def is_secret_key(key: str) -> bool:
    """True when a configuration key names a secret (see SECRET_KEY_PATTERNS)."""
    return bool(_SECRET_KEY.search(str(key)))


def secret_values(mapping: Mapping[str, Any]) -> list[str]:
    """The values of secret keys in a (possibly nested) mapping, as strings."""
    out: list[str] = []
    for key, value in mapping.items():
        if isinstance(value, Mapping):
            out.extend(secret_values(value))
        elif is_secret_key(key) and value not in (None, ""):
            out.append(str(value))
    return out


def remember_secrets(values: Iterable[str]) -> None:
    """Mask these values in every later `redact(text)` of this process (e.g. spark.conf's)."""
    _known.update(v for v in values if len(v) >= _MIN_SECRET_LEN)


def _redact_text(text: str) -> str:
    for value in sorted(_known, key=len, reverse=True):
        text = text.replace(value, MASK)
    return _PAIR.sub(lambda m: f"{m['key']}{m['sep']}{m['q']}{MASK}", text)


def _redact_mapping(mapping: Mapping[Any, Any]) -> dict[Any, Any]:
    out: dict[Any, Any] = {}
    for key, value in mapping.items():
        if isinstance(value, Mapping):
            out[key] = _redact_mapping(value)
        elif is_secret_key(str(key)) and value not in (None, ""):
            out[key] = MASK
        elif isinstance(value, str):
            out[key] = _redact_text(value)
        elif isinstance(value, list | tuple):
            out[key] = [_redact_text(v) if isinstance(v, str) else v for v in value]
        else:
            out[key] = value
    return out


@overload
def redact(obj: str) -> str: ...
@overload
def redact(obj: Mapping[Any, Any]) -> dict[Any, Any]: ...
def redact(obj: str | Mapping[Any, Any]) -> str | dict[Any, Any]:
    """A copy of `obj` with secrets masked: by key in a mapping, by pattern and value in text."""
    if isinstance(obj, Mapping):
        return _redact_mapping(obj)
    return _redact_text(str(obj))
