"""Filter presets: named sets of predicates over the `scored` view, with editable thresholds.

A preset expands into predicates named `<preset>.<part>` (e.g. `datacomp_basic.english`), so
the filter's statistics, `curator why` and `curator costs` say which preset's rule removed a
sample. Expansion is pure: thresholds come in a frozen PresetThresholds built on the driver
(spark_jobs/config.py), and the SQL text is rendered from validated numbers and a language
code only, never from free text.

- datacomp_basic (DataComp's "basic filtering"): English caption, more than 2 words, more than
  5 characters, shorter side >= 200 px, aspect ratio <= 3.
- clip_score_laion (LAION-5B): clip_score >= 0.28 (their threshold with ViT-B/32).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = [
    "PRESETS",
    "NamedPredicate",
    "PresetThresholds",
    "UnknownPresetError",
    "expand_presets",
    "preset_names",
]

_LANGUAGE_CODE = re.compile(r"^[a-z]{2,3}$")


@dataclass(frozen=True)
class PresetThresholds:
    """The numbers presets compare against (field names = the `filter.*` config keys)."""

    clip_score_min: float = 0.28
    min_side: int = 200
    max_aspect_ratio: float = 3.0
    min_caption_words: int = 3
    min_caption_chars: int = 6
    caption_language: str = "en"


@dataclass(frozen=True)
class NamedPredicate:
    """One expanded predicate: `preset.part`, its SQL, the view columns it reads and the
    threshold field it uses (None when it uses none)."""

    name: str
    text: str
    columns: tuple[str, ...]
    threshold: str | None

    @property
    def preset(self) -> str:
        return self.name.split(".", 1)[0]


class UnknownPresetError(ValueError):
    """A preset name that is not in PRESETS; the message lists the known names."""


def _num(value: float) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"preset threshold {value!r} is not a finite number")
    return repr(value) if isinstance(value, float) else str(int(value))


def _lang(code: str) -> str:
    if not isinstance(code, str) or not _LANGUAGE_CODE.match(code):
        raise ValueError(f"caption_language {code!r} is not a lowercase ISO 639 code such as 'en'")
    return f"'{code}'"


# part name, SQL renderer, columns read, threshold field
_Part = tuple[str, Callable[[PresetThresholds], str], tuple[str, ...], str | None]

PRESETS: dict[str, tuple[_Part, ...]] = {
    "datacomp_basic": (
        ("english", lambda t: f"caption_language = {_lang(t.caption_language)}",
         ("caption_language",), "caption_language"),
        ("min_words", lambda t: f"caption_words >= {_num(t.min_caption_words)}",
         ("caption_words",), "min_caption_words"),
        ("min_chars", lambda t: f"caption_chars >= {_num(t.min_caption_chars)}",
         ("caption_chars",), "min_caption_chars"),
        ("min_side", lambda t: f"width >= {_num(t.min_side)} AND height >= {_num(t.min_side)}",
         ("width", "height"), "min_side"),
        ("max_aspect_ratio", lambda t: f"aspect_ratio <= {_num(t.max_aspect_ratio)}",
         ("aspect_ratio",), "max_aspect_ratio"),
    ),
    "clip_score_laion": (
        ("clip_score", lambda t: f"clip_score >= {_num(t.clip_score_min)}",
         ("clip_score",), "clip_score_min"),
    ),
}  # fmt: skip


def preset_names() -> list[str]:
    """The known preset names, in definition order."""
    return list(PRESETS)


def expand_presets(names: Sequence[str], thresholds: PresetThresholds) -> list[NamedPredicate]:
    """The named predicates of `names`, in order; a preset listed twice expands once."""
    unknown = [n for n in names if n not in PRESETS]
    if unknown:
        raise UnknownPresetError(
            f"unknown preset(s) {', '.join(map(repr, unknown))}; the known presets are "
            + ", ".join(PRESETS)
        )
    out: list[NamedPredicate] = []
    for name in dict.fromkeys(names):
        for part, render, columns, threshold in PRESETS[name]:
            out.append(NamedPredicate(f"{name}.{part}", render(thresholds), columns, threshold))
    return out
