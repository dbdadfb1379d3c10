"""Filter presets: expansion into named predicates and their configuration (no Spark)."""

from __future__ import annotations

import pytest

from curator_udfs.predicates import validate_predicate
from curator_udfs.presets import (
    PresetThresholds,
    UnknownPresetError,
    expand_presets,
    preset_names,
)
from spark_jobs.config import ConfigError, filter_predicates, load_config, preset_predicates

DATACOMP = {
    "datacomp_basic.english": "caption_language = 'en'",
    "datacomp_basic.min_words": "caption_words >= 3",
    "datacomp_basic.min_chars": "caption_chars >= 6",
    "datacomp_basic.min_side": "width >= 200 AND height >= 200",
    "datacomp_basic.max_aspect_ratio": "aspect_ratio <= 3.0",
}


def test_expansion_names_each_predicate_after_its_preset() -> None:
    got = expand_presets(["datacomp_basic", "clip_score_laion"], PresetThresholds())
    assert {p.name: p.text for p in got} == {**DATACOMP,
                                              "clip_score_laion.clip_score": "clip_score >= 0.28"}
    assert [p.preset for p in got] == ["datacomp_basic"] * 5 + ["clip_score_laion"]
    assert expand_presets(["clip_score_laion", "clip_score_laion"], PresetThresholds())[0].columns \
        == ("clip_score",)  # fmt: skip
    assert len(expand_presets(["datacomp_basic"] * 2, PresetThresholds())) == 5
    assert expand_presets([], PresetThresholds()) == []
    cols = ["caption_language", "caption_words", "caption_chars", "width", "height",
            "aspect_ratio", "clip_score"]  # fmt: skip
    for p in got:  # every rendered predicate passes the filter's own validation
        assert validate_predicate(p.text, cols).columns == p.columns


def test_thresholds_are_rendered_and_checked() -> None:
    t = PresetThresholds(clip_score_min=0.3, min_side=256, max_aspect_ratio=2.5,
                         min_caption_words=5, min_caption_chars=10, caption_language="de")
    texts = {p.name: p.text for p in expand_presets(["datacomp_basic", "clip_score_laion"], t)}
    assert texts["clip_score_laion.clip_score"] == "clip_score >= 0.3"
    assert texts["datacomp_basic.english"] == "caption_language = 'de'"
    assert texts["datacomp_basic.min_side"] == "width >= 256 AND height >= 256"
    assert texts["datacomp_basic.max_aspect_ratio"] == "aspect_ratio <= 2.5"
    with pytest.raises(ValueError, match="ISO 639"):
        expand_presets(["datacomp_basic"], PresetThresholds(caption_language="en' OR true --"))
    with pytest.raises(ValueError, match="finite"):
        expand_presets(["clip_score_laion"], PresetThresholds(clip_score_min=float("nan")))
    with pytest.raises(UnknownPresetError, match="'nope'.*datacomp_basic, clip_score_laion"):
        expand_presets(["nope"], PresetThresholds())


def test_config_presets_default_empty_and_set_changes_the_predicate() -> None:
    cfg = load_config()
    assert cfg.filter.presets == [] and preset_predicates(cfg) == []
    cfg = load_config(sets=["filter.presets=[datacomp_basic, clip_score_laion]"])
    assert {p.name: p.text for p in preset_predicates(cfg)}["clip_score_laion.clip_score"] == (
        "clip_score >= 0.28"
    )
    cfg = load_config(sets=["filter.presets=[clip_score_laion]", "filter.clip_score_min=0.3",
                            "filter.min_side=512"])  # fmt: skip
    assert [(p.name, p.text) for p in preset_predicates(cfg)] == [
        ("clip_score_laion.clip_score", "clip_score >= 0.3")
    ]
    assert cfg.filter.min_side == 512


def test_presets_combine_with_predicates() -> None:
    hand = "filter.predicates=['aesthetic_score >= 5', 'width >= 200 AND height >= 200']"
    cfg = load_config(sets=[hand, "filter.presets=[datacomp_basic]"])
    got = filter_predicates(cfg)
    assert got[0] == ("aesthetic_score >= 5", None)
    assert got[1] == ("width >= 200 AND height >= 200", None)  # written by hand: kept once
    assert [n for _, n in got[2:]] == ["datacomp_basic.english", "datacomp_basic.min_words",
                                       "datacomp_basic.min_chars",
                                       "datacomp_basic.max_aspect_ratio"]  # fmt: skip


def test_unknown_preset_and_bad_thresholds_are_config_errors() -> None:
    with pytest.raises(ConfigError) as err:
        load_config(sets=["filter.presets=[datacomp_basic, laion]"])
    msg = str(err.value)
    assert "`filter.presets`" in msg and "'laion'" in msg
    assert all(n in msg for n in preset_names())
    with pytest.raises(ConfigError, match="`filter.caption_language`"):
        load_config(sets=["filter.caption_language=English"])
    with pytest.raises(ConfigError, match="`filter.max_aspect_ratio`"):
        load_config(sets=["filter.max_aspect_ratio=0.5"])
    with pytest.raises(ConfigError, match="`filter.clip_score_min`"):
        load_config(sets=["filter.clip_score_min=2"])


def test_check_predicates_names_presets_and_accepts_clip_score() -> None:
    from spark_jobs.filter import check_predicates

    cfg = load_config(sets=["filter.predicates=['nsfw_score < 0.5']",
                            "filter.presets=[clip_score_laion, datacomp_basic]"])  # fmt: skip
    preds = check_predicates(cfg)
    assert [p.name for p in preds][:2] == [None, "clip_score_laion.clip_score"]
    assert preds[1].label == "clip_score_laion.clip_score: clip_score >= 0.28"
    assert preds[0].label == "nsfw_score < 0.5"
    assert {"aspect_ratio", "width", "height"} <= {c for p in preds for c in p.columns}
