"""Export's executor side without Spark: plan helpers, members, real shards in tmp_path."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import webdataset as wds
from PIL import Image

from curator_udfs.export_shards import (
    JSON_OVERHEAD,
    NOT_IN_JSON,
    plan_frames,
    remove_leftovers,
    sample_members,
    sample_tar_estimate,
    task_of_shard,
    write_shard_range,
)
from curator_udfs.wds_writer import plan_shards, sample_tar_bytes, shard_name


def _png(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8 + seed, 6), (seed * 20 % 256, 40, 90)).save(buf, format="PNG")
    return buf.getvalue()


def _row(i: int, **over: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "sample_id": f"{i:016x}",
        "key": f"orig/{i}",
        "shard": "s3://bucket/00000.tar",
        "image": _png(i),
        "image_format": "PNG",
        "image_ext": "png",
        "caption": f"caption {i}",
        "meta": json.dumps({"key": f"orig/{i}", "url": f"http://x/{i}"}),
        "aesthetic_score": i / 4,
        "run_id": "run-1",
        "curated_at": "2024-01-01",
        "_shard": 0,
        "_task": 0,
    }
    row.update(over)
    return row


def _keyed(rows: list[dict[str, Any]], shard_of: list[int], n_tasks: int = 1) -> list[tuple]:
    n_shards = max(shard_of) + 1
    keyed = [
        ((task_of_shard(s, n_shards, n_tasks), s, r["sample_id"]), r)
        for r, s in zip(rows, shard_of, strict=True)
    ]
    return sorted(keyed, key=lambda kr: kr[0])


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_sample_tar_estimate_adds_json_overhead() -> None:
    assert JSON_OVERHEAD == 600
    assert sample_tar_estimate(1000, 10, 50) == sample_tar_bytes([1000, 10, 650])
    assert sample_tar_bytes([]) == 0 and sample_tar_bytes(iter([1, 512])) == 2048
    assert sample_tar_estimate(0, 0, 0) == 3 * 512 + 1024  # 3 headers, .json padded to 1 KiB


def test_task_of_shard_gives_contiguous_ranges_to_every_task() -> None:
    for n_shards, n_tasks in [(10, 3), (7, 7), (100, 8), (1, 1), (5, 2)]:
        tasks = [task_of_shard(s, n_shards, n_tasks) for s in range(n_shards)]
        assert tasks == sorted(tasks)  # contiguous ranges
        assert set(tasks) == set(range(n_tasks))  # no task idle when n_tasks <= n_shards
        sizes = [tasks.count(t) for t in range(n_tasks)]
        assert max(sizes) - min(sizes) <= 1
    assert task_of_shard(0, 0, 1) == 0  # no shards: no division by zero


def _sizes_frame(ids: list[str], img: list[int], ranges: list[str] | None = None) -> pd.DataFrame:
    n = len(ids)
    return pd.DataFrame(
        {"sample_id": ids, "_range": ranges or [""] * n, "img": img, "txt": [7] * n,
         "meta": [40] * n}
    )  # fmt: skip


def test_plan_frames_packs_a_stream_as_plan_shards_packs_the_list() -> None:
    """The executor's plan: whatever the batches, the same shards as the one-list plan, and
    each sample's position counts within its shard."""
    img = [(i * 7919) % 30_000 for i in range(200)]  # sizes that make the byte cap bind
    ids = [f"{i:016x}" for i in range(200)]
    est = [sample_tar_estimate(b, 7, 40) for b in img]
    want = plan_shards(est, 9, 60_000)
    assert len(set(want)) > 200 // 9 + 1  # the byte cap closed some shards early
    for cuts in ([0, 200], [0, 1, 2, 50, 199, 200], list(range(0, 201, 13)) + [200]):
        frames = [_sizes_frame(ids[a:b], img[a:b]) for a, b in zip(cuts, cuts[1:], strict=False)]
        out = pd.concat(list(plan_frames(iter(frames), 9, 60_000)), ignore_index=True)
        assert out["sample_id"].tolist() == ids
        assert out["_local"].tolist() == want
        positions: dict[int, int] = {}
        for shard, pos in zip(out["_local"], out["_pos"], strict=True):
            assert pos == positions.get(shard, 0)
            positions[shard] = pos + 1
    assert list(plan_frames(iter([]), 4, None)) == []
    one = next(plan_frames(iter([_sizes_frame(["a", "b", "c"], [1, 1, 10**9])]), 4, 20_000))
    assert one["_local"].tolist() == [0, 0, 1] and one["_pos"].tolist() == [0, 1, 0]


def test_plan_frames_packs_each_range_on_its_own() -> None:
    """Rows sorted by (range, sample_id): every range starts at shard 0, position 0, also when
    a range starts or ends inside a batch or spans batches."""
    ranges = ["0"] * 5 + ["3"] * 9 + ["a"] * 2
    ids = [f"{r}{i:03d}" for i, r in enumerate(ranges)]
    img = [100] * len(ids)
    want: list[int] = []
    for r in ("0", "3", "a"):
        want += plan_shards([sample_tar_estimate(100, 7, 40)] * ranges.count(r), 4)
    for cuts in ([0, 16], [0, 3, 7, 14, 15, 16], [0, 5, 14, 16]):
        frames = [
            _sizes_frame(ids[a:b], img[a:b], ranges[a:b])
            for a, b in zip(cuts, cuts[1:], strict=False)
        ]
        out = pd.concat(list(plan_frames(iter(frames), 4, None)), ignore_index=True)
        assert out["_range"].tolist() == ranges
        assert out["_local"].tolist() == want == [0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 1, 1, 1, 2, 0, 0]
        assert out["_pos"].tolist() == [0, 1, 2, 3, 0, 0, 1, 2, 3, 0, 1, 2, 3, 0, 0, 1]


def test_sample_members_image_caption_and_json() -> None:
    row = _row(3)
    members = sample_members(row)
    assert set(members) == {"png", "txt", "json"}
    assert members["png"] == row["image"] and members["txt"] == b"caption 3"
    doc = json.loads(members["json"])
    assert not (set(NOT_IN_JSON) - {"meta"}) & set(doc)  # bytes, caption, bookkeeping
    assert doc["sample_id"] == row["sample_id"] and doc["aesthetic_score"] == 0.75
    assert doc["meta"] == {"key": "orig/3", "url": "http://x/3"}  # parsed, not a string
    assert members["json"] == sample_members(dict(reversed(list(row.items()))))["json"]


def test_sample_members_fallbacks() -> None:
    members = sample_members(_row(1, caption=None, meta="not json {", image_format=None))
    assert set(members) == {"png", "json"}  # no caption: no .txt; extension from image_ext
    assert json.loads(members["json"])["meta"] == "not json {"
    assert json.loads(sample_members(_row(1, meta=None))["json"])["meta"] is None
    jpeg = sample_members(_row(2, image_format="JPEG", image_ext="png", caption="ü"))
    assert "jpg" in jpeg and jpeg["txt"] == "ü".encode()
    with pytest.raises(ValueError, match="unknown image format"):
        sample_members(_row(1, image_format="XYZ", image_ext="exe"))


def test_write_shard_range_writes_real_shards_read_back(tmp_path: Path) -> None:
    rows = [_row(i) for i in range(11)]
    shard_of = plan_shards([1] * len(rows), 4)  # 4 + 4 + 3
    infos = list(write_shard_range(iter(_keyed(rows, shard_of)), tmp_path))
    names = [shard_name(i) for i in range(3)]
    assert [i["name"] for i in infos] == names
    assert [i["samples"] for i in infos] == [4, 4, 3]
    assert sorted(p.name for p in tmp_path.iterdir()) == names  # no .tmp left
    for info in infos:
        path = tmp_path / info["name"]
        assert info["bytes"] == path.stat().st_size and info["sha256"] == _sha(path)
    with tarfile.open(tmp_path / names[0]) as tar:
        members = tar.getmembers()
        assert [m.name for m in members[:3]] == [
            f"{rows[0]['sample_id']}.{ext}" for ext in ("json", "png", "txt")
        ]
        assert all(m.mtime == members[0].mtime and m.uid == 0 for m in members)
    assert infos[0]["first_key"] == rows[0]["sample_id"]
    assert infos[0]["last_key"] == rows[3]["sample_id"]

    got = list(wds.WebDataset([str(tmp_path / n) for n in names], shardshuffle=False))
    assert [g["__key__"] for g in got] == [r["sample_id"] for r in rows]
    for g, r in zip(got, rows, strict=True):
        assert g["png"] == r["image"] and g["txt"].decode() == r["caption"]
        assert json.loads(g["json"])["key"] == r["key"]


def test_write_shard_range_same_rows_same_bytes(tmp_path: Path) -> None:
    rows = [_row(i) for i in range(6)]
    keyed = _keyed(rows, [0, 0, 0, 1, 1, 1], n_tasks=2)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = list(write_shard_range(keyed, tmp_path / "a"))
    second = list(write_shard_range(keyed, str(tmp_path / "b")))  # str or Path
    assert first == second  # names, counts, sizes and sha256 identical
    for name in ("00000.tar", "00001.tar"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_write_shard_range_failure_keeps_only_complete_shards(tmp_path: Path) -> None:
    rows = [_row(i) for i in range(9)]
    keyed = _keyed(rows, [0, 0, 0, 1, 1, 1, 2, 2, 2])
    done: list[dict[str, Any]] = []
    with pytest.raises(RuntimeError, match="injected failure while writing shard 1"):
        for info in write_shard_range(keyed, tmp_path, fail_at_shard=1):
            done.append(info)
    assert [d["name"] for d in done] == ["00000.tar"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["00000.tar"]  # shard 1's .tmp gone
    assert _sha(tmp_path / "00000.tar") == done[0]["sha256"]


def test_write_shard_range_bad_row_aborts_its_shard(tmp_path: Path) -> None:
    rows = [_row(0), _row(1, image_format="XYZ", image_ext="bin")]
    with pytest.raises(ValueError, match="unknown image format"):
        list(write_shard_range(_keyed(rows, [0, 0]), tmp_path))
    assert list(tmp_path.iterdir()) == []


def test_write_shard_range_no_rows_writes_nothing(tmp_path: Path) -> None:
    assert list(write_shard_range([], tmp_path)) == []
    assert list(tmp_path.iterdir()) == []


def test_remove_leftovers_only_removes_what_an_export_writes(tmp_path: Path) -> None:
    for name in ("00000.tar", "00001.tar", "00007.tar", "00002.tar.tmp", "manifest.json.tmp"):
        (tmp_path / name).write_bytes(b"x")
    for name in ("notes.txt", "mine.tar", "manifest.json"):
        (tmp_path / name).write_text("not ours")
    (tmp_path / "00009.tar").mkdir()  # a directory, even with a shard's name, is kept
    removed = remove_leftovers(tmp_path, {"00000.tar", "00001.tar"})
    assert removed == ["00002.tar.tmp", "00007.tar", "manifest.json.tmp"]  # sorted
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "00000.tar",
        "00001.tar",
        "00009.tar",
        "manifest.json",
        "mine.tar",
        "notes.txt",
    ]
    assert remove_leftovers(tmp_path, {"00000.tar", "00001.tar"}) == []


def test_sample_tar_estimate_of_arrays_is_elementwise() -> None:
    """The plan estimates a whole batch at once: the same numbers as one sample at a time."""
    img = np.array([0, 1, 511, 512, 513, 10**9], dtype=np.int64)
    txt = np.array([0, 7, 512, 3, 1000, 0], dtype=np.int64)
    meta = np.array([0, 40, 0, 2000, 9, 1], dtype=np.int64)
    rows = zip(img.tolist(), txt.tolist(), meta.tolist(), strict=True)
    want = [sample_tar_estimate(i, t, m) for i, t, m in rows]
    assert sample_tar_estimate(img, txt, meta).tolist() == want
