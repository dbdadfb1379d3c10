"""Synthetic img2dataset-style shards: layout, determinism, planted duplicates, readability."""

from __future__ import annotations

import hashlib
import io
import json
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import webdataset
from PIL import Image

from curator_udfs.sample_shards import SampleShardsReport, write_sample_shards
from curator_udfs.shard_reader import IngestedSample, IngestLimits, ShardReader


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SampleShardsReport]:
    out = tmp_path_factory.mktemp("sample_shards")
    return out, write_sample_shards(out, shards=4, per_shard=100, seed=3)


def test_layout(generated: tuple[Path, SampleShardsReport]):
    out, report = generated
    assert report.samples == 400
    assert report.paths == [out / f"{s:05d}.tar" for s in range(4)]
    names = sorted(p.name for p in out.iterdir())
    want = ["_planted.json"]
    for s in range(4):
        want += [f"{s:05d}.parquet", f"{s:05d}.tar", f"{s:05d}_stats.json"]
    assert names == sorted(want)  # no temporary files left behind
    stats = json.loads((out / "00002_stats.json").read_text())
    assert stats["count"] == stats["successes"] == 100
    assert stats["status"] == "success"
    for name in ("failed_to_download", "failed_to_resize", "duration", "start_time", "end_time"):
        assert name in stats


def test_webdataset_reads_the_same_keys(generated: tuple[Path, SampleShardsReport]):
    out, report = generated
    url = str(out / "00001.tar")
    samples = list(webdataset.WebDataset(url, shardshuffle=False))
    assert [s["__key__"] for s in samples] == [f"00001{i:04d}" for i in range(100)]
    table = pq.read_table(out / "00001.parquet").to_pylist()
    assert [r["key"] for r in table] == [s["__key__"] for s in samples]
    for sample, row in zip(samples, table, strict=True):
        exts = {k for k in sample if not k.startswith("__")}
        (image_ext,) = exts - {"txt", "json"}
        assert exts == {image_ext, "txt", "json"} and image_ext in {"jpg", "png", "webp"}
        meta = json.loads(sample["json"])
        data = sample[image_ext]
        assert meta["key"] == sample["__key__"] and meta["status"] == "success"
        assert meta["error_message"] is None and meta["url"].startswith("https://")
        assert meta["sha256"] == hashlib.sha256(data).hexdigest() == row["sha256"]
        assert meta["caption"] == sample["txt"].decode() == row["caption"]
        with Image.open(io.BytesIO(data)) as img:
            assert img.size == (meta["width"], meta["height"])
            assert img.format == {"jpg": "JPEG", "png": "PNG", "webp": "WEBP"}[image_ext]
        assert (meta["original_width"], meta["original_height"]) == img.size
        assert row["width"] == meta["width"] and row["height"] == meta["height"]


def test_ingests_cleanly(generated: tuple[Path, SampleShardsReport]):
    out, report = generated
    formats: Counter[str] = Counter()
    for path in report.paths:
        reader = ShardReader("file://" + str(path), IngestLimits())
        items = list(reader)
        assert reader.outcome.status == "ok" and reader.outcome.quarantined == 0
        for item in items:
            assert isinstance(item, IngestedSample) and item.warnings == []
            assert 64 <= item.width <= 384 and 64 <= item.height <= 384
            formats[item.image_format] += 1
    # ~70 / 20 / 10 % (near duplicates are JPEG, which shifts the mix a little).
    assert 240 <= formats["JPEG"] <= 320
    assert 50 <= formats["PNG"] <= 110
    assert 20 <= formats["WEBP"] <= 60


def test_planted_pairs(generated: tuple[Path, SampleShardsReport]):
    out, report = generated
    assert report.planted_path == out / "_planted.json"
    planted = json.loads(report.planted_path.read_text())
    exact_pairs, near_pairs = planted["exact"], planted["near"]
    assert (report.exact_pairs, report.near_pairs) == (12, 20)
    assert (len(exact_pairs), len(near_pairs)) == (12, 20)
    samples = {}
    for path in report.paths:
        samples.update({i.key: i for i in ShardReader("file://" + str(path), IngestLimits())})
    for src, dup in exact_pairs:
        assert src != dup
        assert samples[src].image == samples[dup].image
    shards_of_pairs = {(src[:5], dup[:5]) for src, dup in exact_pairs}
    assert any(a != b for a, b in shards_of_pairs)  # some duplicates cross shards
    kinds = Counter(kind for _, _, kind in near_pairs)
    assert set(kinds) <= {"reencode", "resize", "crop"} and len(kinds) >= 2
    for src, dup, kind in near_pairs:
        s, d = samples[src], samples[dup]
        assert s.image_sha256 != d.image_sha256 and d.image_format == "JPEG"
        if kind == "reencode":
            assert (d.width, d.height) == (s.width, s.height)
        else:
            assert d.width <= s.width and d.height <= s.height
            assert (d.width, d.height) != (s.width, s.height) or min(s.width, s.height) <= 70
    # The sha256 of every exact duplicate appears exactly twice or more; others mostly once.
    sha_counts = Counter(i.image_sha256 for i in samples.values())
    assert sum(c - 1 for c in sha_counts.values()) == len(exact_pairs)


def test_same_seed_same_bytes(tmp_path: Path):
    a = write_sample_shards(tmp_path / "a", shards=2, per_shard=15, seed=11)
    b = write_sample_shards(tmp_path / "b", shards=2, per_shard=15, seed=11)
    c = write_sample_shards(tmp_path / "c", shards=2, per_shard=15, seed=12)
    for name in ("00000.tar", "00001.tar", "00000.parquet", "00001_stats.json", "_planted.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert (tmp_path / "a" / "00000.tar").read_bytes() != (
        tmp_path / "c" / "00000.tar"
    ).read_bytes()
    assert (a.exact_pairs, a.near_pairs) == (b.exact_pairs, b.near_pairs) == (1, 2)
    assert c.samples == 30


def test_size_bounds_and_arguments(tmp_path: Path):
    report = write_sample_shards(tmp_path, shards=1, per_shard=20, min_size=32, max_size=48)
    for item in ShardReader("file://" + str(report.paths[0]), IngestLimits()):
        assert isinstance(item, IngestedSample)
        assert 32 <= item.width <= 48 and 32 <= item.height <= 48
    with pytest.raises(ValueError):
        write_sample_shards(tmp_path / "x", shards=0)
    with pytest.raises(ValueError):
        write_sample_shards(tmp_path / "x", min_size=100, max_size=50)
