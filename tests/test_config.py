"""Configuration: YAML + --set overlays, and errors that name the key and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from spark_jobs.config import ConfigError, load_config


def test_defaults_are_the_design_defaults() -> None:
    cfg = load_config()
    assert cfg.warehouse == "./warehouse" and cfg.database == "curator"
    assert cfg.embed.model == "vit_large_patch14_clip_quickgelu_224.openai"
    assert [h.name for h in cfg.classifiers] == ["aesthetic", "nsfw"]
    assert cfg.filter.predicates == ["aesthetic_score >= 5", "nsfw_score < 0.2"]
    assert cfg.dedup.eps == [0.01] and cfg.export.samples_per_shard == 10000


def test_yaml_then_sets_then_warehouse(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("embed: {model: resnet18, batch_size: 8}\nwarehouse: /a\n")
    cfg = load_config(
        f,
        ["embed.model=test_vit", "embed.pretrained=false", 'filter.predicates=["width >= 64"]'],
        warehouse="/b",
    )
    assert (
        cfg.embed.model == "test_vit"
        and cfg.embed.pretrained is False
        and cfg.embed.batch_size == 8
    )
    assert cfg.filter.predicates == ["width >= 64"]
    assert cfg.warehouse == "/b"


def test_set_spark_conf_keys_keep_their_dots() -> None:
    cfg = load_config(
        sets=["spark.conf.spark.sql.shuffle.partitions=3", "spark.profile=gpu-cluster"]
    )
    assert cfg.spark.conf == {"spark.sql.shuffle.partitions": 3}
    assert cfg.spark.profile == "gpu-cluster"


@pytest.mark.parametrize(
    ("sets", "expected"),
    [
        (["embed.bath_size=3"], "`embed.bath_size`: unknown key; did you mean `embed.batch_size`?"),
        (["embed.batch_size=abc"], "`embed.batch_size`"),
        (["embed.batch_size=0"], "greater than 0"),
        (["dedup.eps=[1.5]"], "`dedup.eps`"),
        (["dedup.keep=biggest"], "aesthetic"),
        (["dedup.methods=[exact, fuzzy]"], "`dedup.methods[1]`"),
        (["embed"], "expected dotted.key=value"),
        (["database=bad-name"], "`database`"),
    ],
)
def test_errors_name_the_key_and_the_fix(sets: list[str], expected: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(sets=sets)
    assert expected in str(exc.value)


def test_removed_dedup_max_driver_pairs_says_why(tmp_path: Path) -> None:
    yaml_file = tmp_path / "old.yaml"
    yaml_file.write_text("dedup:\n  max_driver_pairs: 1000000\n")
    for kwargs in ({"path": yaml_file}, {"sets": ["dedup.max_driver_pairs=10"]}):
        with pytest.raises(ConfigError) as exc:
            load_config(**kwargs)
        msg = str(exc.value)
        assert "`dedup.max_driver_pairs`" in msg and "resolution now runs in Spark" in msg
        assert "unknown key" not in msg


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list\n- not a mapping\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(bad)


def test_example_config_in_conf_is_valid() -> None:
    cfg = load_config(Path(__file__).parent.parent / "conf" / "curation.yaml")
    assert cfg.input.shards
