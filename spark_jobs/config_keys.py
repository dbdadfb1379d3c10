"""Where a config validation error points: dotted key names and field help of a schema."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


def known_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Every dotted key of the schema `model` (for did-you-mean hints)."""
    keys: list[str] = []
    for name, field in model.model_fields.items():
        keys.append(prefix + name)
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            keys.extend(known_keys(ann, prefix + name + "."))
    return keys


def dotted_key(loc: tuple[Any, ...]) -> str:
    """A pydantic error location as the key a user writes (`classifiers[0].name`)."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def field_help(root: type[BaseModel], loc: tuple[Any, ...]) -> str | None:
    """The description of the field at `loc` in `root` (what a valid value looks like)."""
    model: Any = root
    field = None
    for part in loc:
        if isinstance(part, int):
            continue
        if (
            not (isinstance(model, type) and issubclass(model, BaseModel))
            or part not in model.model_fields
        ):
            return None
        field = model.model_fields[part]
        ann = field.annotation
        args = getattr(ann, "__args__", ())
        model = (
            ann if isinstance(ann, type) else next((a for a in args if isinstance(a, type)), None)
        )
    return field.description if field is not None else None
