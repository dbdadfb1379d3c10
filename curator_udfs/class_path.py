"""User classes named by `package.module:ClassName` (custom embedders and heads)."""

from __future__ import annotations

import importlib
import inspect
from typing import Any

__all__ = ["import_class"]


def import_class(path: str, base: type, key: str) -> Any:
    """`path` imported and checked to subclass `base`; a ValueError with the fix otherwise
    (`key` names the setting in the message)."""
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"{key} {path!r} must look like 'package.module:ClassName'")
    try:
        obj = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ValueError(
            f"{key} {path!r} cannot be imported ({exc}); make the module importable on the "
            "driver and executors (e.g. --py-files)"
        ) from exc
    if not (inspect.isclass(obj) and issubclass(obj, base)):
        raise ValueError(f"{key} {path!r} is not a {base.__name__} subclass")
    return obj
