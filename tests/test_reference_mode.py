"""`ingest.bytes: reference`: images keep byte ranges of the shards, and every stage that needs
the bytes reads them back verified; a shard changed after ingest sends its samples to
quarantine instead of being processed from the wrong bytes."""

from __future__ import annotations

import gzip
import json
import os
import tarfile
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from curator_udfs.byte_ranges import fill_images, shard_change
from curator_udfs.ids import normalize_shard_uri
from curator_udfs.sample_shards import write_sample_shards
from curator_udfs.shard_reader import IngestedSample, ShardReader
from tests.tiny import TINY

STAGES = ["ingest", "embed", "dedup", "filter", "export"]
SETS = (*TINY, "filter.predicates=['width >= 64']", "dedup.methods=[exact, perceptual, semantic]")


def _samples(shard: Path) -> list[IngestedSample]:
    items = ShardReader(normalize_shard_uri(str(shard)))
    return [s for s in items if isinstance(s, IngestedSample)]


def test_offsets_are_byte_ranges_of_the_file(tmp_path: Path) -> None:
    write_sample_shards(tmp_path, shards=1, per_shard=10, seed=3)
    shard = next(tmp_path.glob("*.tar"))
    raw = shard.read_bytes()
    samples = _samples(shard)
    assert samples and all(s.image_offset is not None for s in samples)
    for s in samples:
        assert s.image_offset is not None
        assert raw[s.image_offset : s.image_offset + len(s.image)] == s.image


def test_a_compressed_shard_has_no_byte_ranges(tmp_path: Path) -> None:
    write_sample_shards(tmp_path, shards=1, per_shard=4, seed=3)
    shard = next(tmp_path.glob("*.tar"))
    gz = tmp_path / "00000.tar.gz"
    gz.write_bytes(gzip.compress(shard.read_bytes()))
    samples = _samples(gz)
    assert len(samples) == len(_samples(shard)) and all(s.image_offset is None for s in samples)


def _frame(shard: Path) -> pd.DataFrame:
    uri = normalize_shard_uri(str(shard))
    rows = [
        {
            "sample_id": s.key,
            "image": None,
            "shard_uri": uri,
            "image_offset": s.image_offset,
            "image_bytes": len(s.image),
            "image_sha256": s.image_sha256,
        }
        for s in _samples(shard)
    ]
    return pd.DataFrame(rows)


def test_fill_images_reads_and_verifies_the_ranges(tmp_path: Path) -> None:
    write_sample_shards(tmp_path, shards=1, per_shard=8, seed=4)
    shard = next(tmp_path.glob("*.tar"))
    expected = {s.key: s.image for s in _samples(shard)}
    frame = _frame(shard).iloc[::-1]  # any order: ranges are read in offset order
    filled = fill_images(frame)
    assert filled["image_error"].isna().all()
    assert dict(zip(filled["sample_id"], filled["image"], strict=True)) == expected

    # bytes kept in the row pass through unread; a wrong range is caught by its sha256
    frame = _frame(shard)
    frame.loc[0, "image"] = b"kept"
    frame.loc[1, "image_offset"] = int(frame.loc[1, "image_offset"]) + 1
    out = fill_images(frame)
    assert out.loc[0, "image"] == b"kept" and out.loc[0, "image_error"] is None
    assert out.loc[1, "image"] is None and out.loc[1, "image_error"].startswith("image_changed:")
    assert out["image_error"].iloc[2:].isna().all()

    gone = _frame(shard)
    shard.unlink()
    errors = fill_images(gone)["image_error"]
    assert errors.str.startswith("shard_unreadable:").all()


def test_shard_change_sees_size_and_mtime(tmp_path: Path) -> None:
    write_sample_shards(tmp_path, shards=1, per_shard=2, seed=5)
    shard = next(tmp_path.glob("*.tar"))
    uri, st = normalize_shard_uri(str(shard)), shard.stat()
    assert shard_change(uri, st.st_size, st.st_mtime) is None
    assert shard_change(uri, st.st_size + 1, st.st_mtime).startswith("shard_changed: size")
    os.utime(shard, (st.st_atime, st.st_mtime + 60))
    assert shard_change(uri, st.st_size, st.st_mtime).startswith("shard_changed: mtime")
    assert shard_change(uri + ".missing", 1, None).startswith("shard_unreadable:")


def _tables(spark, cfg) -> dict[str, pd.DataFrame]:  # type: ignore[no-untyped-def]
    from spark_jobs.tables import read_table

    def frame(logical: str, cols: list[str], order: list[str]) -> pd.DataFrame:
        rows = read_table(spark, cfg, logical).select(*cols).collect()
        df = pd.DataFrame([r.asDict() for r in rows], columns=cols)
        return df.sort_values(order).reset_index(drop=True)

    return {
        "scores": frame("scores", ["sample_id", "embedding", "aesthetic_score", "error"],
                        ["sample_id"]),
        "phashes": frame("phashes", ["sample_id", "phash", "error"], ["sample_id"]),
        "duplicates": frame("duplicates", ["sample_id", "duplicate_of", "method", "eps"],
                            ["method", "eps", "sample_id"]),
        "curated": frame("curated", ["sample_id"], ["sample_id"]),
    }  # fmt: skip


VOLATILE = ("ingested_at", "scored_at", "curated_at")  # when each run wrote its rows


def _exported(out: Path) -> dict[str, object]:
    """Every exported member: bytes, JSON without the write times."""
    members: dict[str, object] = {}
    for shard in sorted(out.glob("*.tar")):
        with tarfile.open(shard) as tar:
            for m in tar.getmembers():
                f = tar.extractfile(m)
                assert f is not None
                data = f.read()
                if m.name.endswith(".json"):
                    doc = json.loads(data)
                    assert set(VOLATILE) & set(doc)  # the JSON does carry them
                    members[m.name] = {k: v for k, v in doc.items() if k not in VOLATILE}
                else:
                    members[m.name] = data
    return members


def test_both_byte_modes_curate_the_same(spark, make_cfg: Callable, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The whole pipeline on the same shards, copy and reference: the same scores, hashes,
    duplicates, curated set and exported bytes; reference mode stores no image bytes."""
    from spark_jobs import check, pipeline
    from spark_jobs.tables import read_table

    shards = tmp_path / "shards"
    write_sample_shards(shards, shards=2, per_shard=12, seed=6)
    got = {}
    for mode in ("copy", "reference"):
        cfg = make_cfg(*SETS, f"ingest.bytes={mode}", warehouse=tmp_path / f"wh_{mode}")
        out = tmp_path / f"out_{mode}"
        pipeline.run(spark, cfg, stages=STAGES, inputs=[str(shards)], output=str(out))
        images = read_table(spark, cfg, "images")
        stored = images.where("image IS NOT NULL").count()
        assert images.where("image_offset IS NULL").count() == 0
        assert stored == (images.count() if mode == "copy" else 0)
        modes = {r[0] for r in read_table(spark, cfg, "shards").select("byte_mode").collect()}
        assert modes == {mode}
        assert all(i.violations == 0 for i in check.invariants(spark, cfg))
        got[mode] = (_tables(spark, cfg), _exported(out))
    (copy_t, copy_x), (ref_t, ref_x) = got["copy"], got["reference"]
    for name in copy_t:
        pd.testing.assert_frame_equal(copy_t[name], ref_t[name], obj=name)
    assert copy_t["scores"]["error"].isna().all() and len(copy_t["scores"]) == 24
    assert len(copy_t["duplicates"]) > 0 and copy_x
    assert [n for n in copy_x if copy_x[n] != ref_x.get(n)] == [] and copy_x.keys() == ref_x.keys()


def test_a_changed_shard_goes_to_quarantine(spark, make_cfg: Callable, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A shard rewritten after a reference-mode ingest: its samples are quarantined (reason
    shard_changed), never embedded, hashed or exported; the other shard goes on; the
    accounting invariants still hold."""
    from spark_jobs import check, pipeline
    from spark_jobs.tables import read_table

    shards = tmp_path / "shards"
    write_sample_shards(shards, shards=2, per_shard=10, seed=7)
    cfg = make_cfg(*SETS, "ingest.bytes=reference")
    pipeline.run(spark, cfg, stages=["ingest"], inputs=[str(shards)])
    changed = sorted(shards.glob("*.tar"))[0]
    uri = normalize_shard_uri(str(changed))
    with changed.open("ab") as f:  # e.g. a re-upload with more samples
        f.write(b"\0" * 10240)
    before = {r[0] for r in read_table(spark, cfg, "images").where(f"shard_uri = '{uri}'")
              .select("sample_id").collect()}  # fmt: skip
    out = tmp_path / "out"
    result = pipeline.run(spark, cfg, stages=STAGES[1:], output=str(out))
    by = {s.job: s for s in result.summaries}
    assert by["embed"].extra["shards_changed"] == 1
    assert by["embed"].extra["samples_quarantined"] == len(before) == 10
    assert by["export"].extra["samples_quarantined"] == 0  # once, by the first stage
    q = read_table(spark, cfg, "quarantine").where(f"shard_uri = '{uri}'").collect()
    assert len(q) == 10 and {r["reason"] for r in q} == {"shard_changed"}
    assert all("after ingest: size" in r["detail"] for r in q)
    scored = {r[0] for r in read_table(spark, cfg, "scores").select("sample_id").collect()}
    hashed = {r[0] for r in read_table(spark, cfg, "phashes").select("sample_id").collect()}
    assert not scored & before and len(scored) == 10 and not hashed & before
    exported = {r[0] for r in read_table(spark, cfg, "exported").select("sample_id").collect()}
    assert exported and not exported & before
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["samples"] == len(exported)
    assert all(i.violations == 0 for i in check.invariants(spark, cfg))

    # rerun: nothing is quarantined twice, nothing of the changed shard is processed
    again = pipeline.run(spark, cfg, stages=["embed"])
    assert again.summaries[0].extra["samples_quarantined"] == 0
    assert again.summaries[0].rows_written == 0
