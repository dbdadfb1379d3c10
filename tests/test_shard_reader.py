"""ShardReader and image_probe on broken and unusual shards (tests/badshards.py), no Spark."""

from __future__ import annotations

import hashlib
import io
import json
import random
import tarfile
import tracemalloc
import warnings
from pathlib import Path

import pytest

from curator_udfs import shard_reader
from curator_udfs.ids import normalize_shard_uri
from curator_udfs.image_probe import ImageRejected, ext_matches_format, probe_image
from curator_udfs.shard_reader import (
    IngestedSample,
    IngestLimits,
    QuarantinedItem,
    ShardReader,
    split_member_name,
)
from curator_udfs.tar_members import TarMembers
from tests import badshards as bs

Item = IngestedSample | QuarantinedItem


def read(path: Path, limits: IngestLimits | None = None) -> tuple[list[Item], ShardReader]:
    reader = ShardReader(normalize_shard_uri(str(path)), limits or IngestLimits())
    items = list(reader)
    assert reader.outcome is not None
    out = reader.outcome
    assert out.samples == out.images + out.quarantined == len(items)
    assert out.images == sum(isinstance(i, IngestedSample) for i in items)
    return items, reader


def outcomes(items: list[Item]) -> list[tuple[str, str]]:
    return [(i.key, "image" if isinstance(i, IngestedSample) else i.reason) for i in items]


def check_expected(items: list[Item], expected: dict[str, str]) -> None:
    """Every written key accounted for exactly, with the right outcome."""
    got = outcomes(items)
    dup_keys = [k for k, v in expected.items() if v == "duplicate_key"]
    want = {(k, v) for k, v in expected.items()} | {(k, "image") for k in dup_keys}
    assert set(got) == want
    assert len(got) == bs.expected_totals(expected)["samples"]


# -- probe_image -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "fmt", "size"),
    [
        (bs.jpeg_bytes(40, 30, "CMYK"), "JPEG", (40, 30)),
        (bs.jpeg_bytes(7, 5, "L"), "JPEG", (7, 5)),
        (bs.png_bytes(33, 17, "I;16"), "PNG", (33, 17)),
        (bs.png_bytes(20, 10, "RGBA"), "PNG", (20, 10)),
        (bs.png_bytes(24, 24, "P"), "PNG", (24, 24)),
        (bs.gif_bytes(30, 20, frames=3), "GIF", (30, 20)),
        (bs.gif_bytes(30, 20, frames=1), "GIF", (30, 20)),
        (bs.webp_bytes(28, 14), "WEBP", (28, 14)),
        (bs.bmp_bytes(16, 8), "BMP", (16, 8)),
        (bs.tiff_bytes(16, 8), "TIFF", (16, 8)),
        (bs.jpeg_bytes(1, 1), "JPEG", (1, 1)),
        (bs.png_bytes(1, 1, "L"), "PNG", (1, 1)),
    ],
)
def test_probe_accepts_unusual_valid_images(data: bytes, fmt: str, size: tuple[int, int]):
    info = probe_image(data, max_pixels=10_000)
    assert (info.format, info.width, info.height) == (fmt, *size)


def test_probe_reports_mpo_as_jpeg():
    from PIL import Image

    frames = [Image.new("RGB", (12, 8), c) for c in ("red", "blue")]
    out = io.BytesIO()
    frames[0].save(out, "MPO", save_all=True, append_images=frames[1:])
    assert probe_image(out.getvalue(), max_pixels=1000).format == "JPEG"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty_image"),
        (bs.undecodable_bytes(), "undecodable_image"),
        (bs.disallowed_format_bytes(), "undecodable_image"),
        (bs.jpeg_bytes()[:20], "undecodable_image"),
        (bs.bomb_png_bytes(20_000, 20_000), "too_many_pixels"),
        (bs.bomb_png_bytes(10_000, 10_000), "too_many_pixels"),  # PIL only warns here
        (bs.bomb_png_bytes(0, 10), "undecodable_image"),
    ],
)
def test_probe_rejects(data: bytes, reason: str):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no PIL warning may escape either
        with pytest.raises(ImageRejected) as info:
            probe_image(data, max_pixels=IngestLimits().max_image_pixels)
    assert info.value.reason == reason
    assert info.value.detail


def test_probe_pixel_limit_is_from_header():
    data = bs.png_bytes(100, 50)
    assert probe_image(data, max_pixels=5000).width == 100
    with pytest.raises(ImageRejected, match="too_many_pixels"):
        probe_image(data, max_pixels=4999)


def test_bomb_builder_is_cheap():
    assert len(bs.bomb_png_bytes()) < 200


@pytest.mark.parametrize(
    ("ext", "fmt", "ok"),
    [
        ("jpg", "JPEG", True),
        ("JPEG", "JPEG", True),
        ("jpg", "MPO", True),
        ("tif", "TIFF", True),
        ("tiff", "TIFF", True),
        ("png", "JPEG", False),
        ("webp", "WEBP", True),
        ("gif", "PNG", False),
        ("txt", "PNG", False),
    ],
)
def test_ext_matches_format(ext: str, fmt: str, ok: bool):
    assert ext_matches_format(ext, fmt) is ok


@pytest.mark.parametrize(
    ("name", "key", "ext"),
    [
        ("a/b/000123.jpg", "a/b/000123", "jpg"),
        ("x.JPEG", "x", "jpeg"),
        ("x.seg.PNG", "x", "seg.png"),
        ("d.v1/k.txt", "d.v1/k", "txt"),
        ("noext", "noext", ""),
    ],
)
def test_split_member_name(name: str, key: str, ext: str):
    assert split_member_name(name) == (key, ext)


# -- the mixed shard -------------------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True])
def test_mixed_shard_exact_accounting(tmp_path: Path, gz: bool):
    path = tmp_path / ("mixed.tar.gz" if gz else "mixed.tar")
    expected = bs.write_mixed_bad_shard(path, gz=gz)
    items, reader = read(path)
    check_expected(items, expected)
    totals = bs.expected_totals(expected)
    out = reader.outcome
    assert out is not None
    assert (out.status, out.error) == ("ok", None)
    assert (out.samples, out.images, out.quarantined) == (
        totals["samples"],
        totals["images"],
        totals["quarantined"],
    )
    assert out.bytes_read > 0 and out.bytes_read <= path.stat().st_size
    # Shard order is kept; the duplicate key's first occurrence is the ingested one.
    keys = [i.key for i in items]
    assert keys[0] == "good0000" and keys[-1] == "good0003"
    dup = [i for i in items if i.key == "good0001"]
    assert isinstance(dup[0], IngestedSample) and isinstance(dup[1], QuarantinedItem)
    assert dup[0].caption == "caption 1"


def test_mixed_shard_samples_and_warnings(tmp_path: Path):
    path = tmp_path / "mixed.tar"
    bs.write_mixed_bad_shard(path)
    with tarfile.open(path) as tar:
        raw = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isreg()}
    items, _ = read(path)
    samples = {i.key: i for i in items if isinstance(i, IngestedSample)}
    for key, sample in samples.items():
        assert sample.warnings == bs.MIXED_SHARD_WARNINGS.get(key, []), key
        image_member = next(
            m for m in sample.members if split_member_name(m)[1] == sample.image_ext
        )
        assert sample.image == raw[image_member]  # original bytes, never re-encoded
        assert sample.image_sha256 == hashlib.sha256(sample.image).hexdigest()
        if sample.meta is not None:
            json.loads(sample.meta)
    for key, (fmt, w, h) in bs.MIXED_SHARD_IMAGES.items():
        assert (samples[key].image_format, samples[key].width, samples[key].height) == (fmt, w, h)
    assert samples["upper"].image_ext == "jpg" and samples["upperjpeg"].image_ext == "jpeg"
    assert samples["mismatch"].image_ext == "png"
    assert samples["good0000"].meta == '{"key": "good0000"}'  # the original text, kept
    assert samples["good0000"].members == ["good0000.jpg", "good0000.txt", "good0000.json"]
    assert samples["badutf8"].caption.startswith("caf\ufffd")
    assert samples["extra"].members[-2:] == ["extra.cls", "extra.npy"]
    for key in ("badjson", "deepjson", "nanjson", "latin1json"):
        assert samples[key].meta is None
    quarantined = {i.key: i for i in items if isinstance(i, QuarantinedItem)}
    assert quarantined["bomb"].member == "bomb.png" and quarantined["bomb"].size > 0
    assert quarantined["symlinked"].member == "symlinked.jpg"
    assert quarantined["somedir"].member == "somedir"
    assert quarantined["noimage"].member is None and quarantined["noimage"].size > 0


def spy_member_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the members whose bytes the reader reads (every read goes through _read)."""
    opened: list[str] = []
    real = shard_reader._read

    def spy(tar: TarMembers, info: tarfile.TarInfo, size: int) -> bytes:
        opened.append(info.name)
        return real(tar, info, size)

    monkeypatch.setattr(shard_reader, "_read", spy)
    return opened


def test_link_targets_never_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    path = bs.write_tar(tmp_path / "l.tar", [bs.symlink("s.jpg", "/etc/shadow"), *bs.sample("ok")])
    opened = spy_member_reads(monkeypatch)
    items, _ = read(path)
    assert outcomes(items) == [("s", "link_member"), ("ok", "image")]
    assert "s.jpg" not in opened and "ok.jpg" in opened


# -- whole-shard failures --------------------------------------------------------------


def test_not_a_tar(tmp_path: Path):
    expected = bs.write_not_a_tar(tmp_path / "x.tar")
    items, reader = read(tmp_path / "x.tar")
    check_expected(items, expected)
    assert reader.outcome.status == "failed" and "not_a_tar" in reader.outcome.error
    assert items[0].detail


def test_empty_file_is_not_a_tar(tmp_path: Path):
    (tmp_path / "e.tar").write_bytes(b"")
    items, reader = read(tmp_path / "e.tar")
    assert outcomes(items) == [("", "not_a_tar")]
    assert reader.outcome.status == "failed"


def test_empty_archive_is_ok(tmp_path: Path):
    path = bs.write_tar(tmp_path / "empty.tar", [])
    items, reader = read(path)
    assert items == [] and reader.outcome.status == "ok"


def test_missing_file_is_read_error(tmp_path: Path):
    items, reader = read(tmp_path / "nope.tar")
    assert outcomes(items) == [("", "read_error")]
    assert reader.outcome.status == "failed" and "read_error" in reader.outcome.error


@pytest.mark.parametrize("gz", [False, True])
def test_truncated_mid_member(tmp_path: Path, gz: bool):
    path = tmp_path / ("t.tar.gz" if gz else "t.tar")
    expected = bs.write_truncated_tar(path, complete=3, gz=gz)
    items, reader = read(path)
    check_expected(items, expected)
    assert outcomes(items)[-1] == ("good0003", "truncated_tar")
    assert reader.outcome.status == "truncated"
    assert reader.outcome.images == 3


def test_truncated_at_member_boundary(tmp_path: Path):
    expected = bs.write_truncated_at_boundary(tmp_path / "b.tar", complete=2)
    items, reader = read(tmp_path / "b.tar")
    check_expected(items, expected)
    assert reader.outcome.status == "truncated"


def test_truncated_between_samples_emits_keyless_item(tmp_path: Path):
    data = bs.tar_bytes(bs.good_members(2))
    # Cut inside the header of the second sample's first member: nothing of it was read yet.
    second = data.index(b"good0001.jpg")
    (tmp_path / "c.tar").write_bytes(data[: second + 100])
    items, reader = read(tmp_path / "c.tar")
    assert outcomes(items) == [("good0000", "truncated_tar")]
    assert reader.outcome.status == "truncated"


def test_cut_inside_header_after_complete_sample(tmp_path: Path):
    # Samples are only known complete at a key change, so the last one is lost with the cut;
    # a keyless item is emitted when the cut lands where no sample is in progress.
    data = bs.tar_bytes([bs.directory("d"), *bs.good_members(1)])
    first = data.index(b"good0000.jpg")
    (tmp_path / "k.tar").write_bytes(data[: first + 300])
    items, _ = read(tmp_path / "k.tar")
    assert outcomes(items) == [("d", "directory_member"), ("", "truncated_tar")]


def test_corrupt_gzip_is_read_error(tmp_path: Path):
    data = bytearray(bs.gzip_bytes(bs.tar_bytes(bs.good_members(30))))
    data[len(data) // 2 : len(data) // 2 + 64] = bytes(64)
    (tmp_path / "z.tar.gz").write_bytes(bytes(data))
    items, reader = read(tmp_path / "z.tar.gz")
    assert reader.outcome.status in ("failed", "truncated")
    assert outcomes(items)[-1][1] in ("read_error", "truncated_tar")
    assert all(o == "image" for _, o in outcomes(items)[:-1])


# -- limits and streaming --------------------------------------------------------------


def test_oversized_image_not_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    size = 8_000_000
    expected = bs.write_oversized_image_shard(tmp_path / "o.tar", image_size=size)
    opened = spy_member_reads(monkeypatch)
    tracemalloc.start()
    try:
        items, reader = read(tmp_path / "o.tar", IngestLimits(max_image_bytes=1_000_000))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    check_expected(items, expected)
    assert "big.jpg" not in opened and "small1.jpg" in opened
    assert peak < size / 4, peak  # the 8 MB member streamed past, never held
    big = next(i for i in items if i.key == "big")
    assert (big.member, big.size) == ("big.jpg", size)
    assert reader.outcome.bytes_read >= size


def test_oversized_image_accepted_under_default_limit(tmp_path: Path):
    expected = bs.write_oversized_image_shard(tmp_path / "o.tar", image_size=300_000)
    items, _ = read(tmp_path / "o.tar")
    assert {k: "image" for k in expected} == dict(outcomes(items))


def test_caption_truncated_safely(tmp_path: Path):
    caption = "é" * 100  # 200 bytes; a limit of 51 cuts a character in half
    path = bs.write_tar(tmp_path / "c.tar", bs.sample("k", caption=caption))
    items, _ = read(path, IngestLimits(max_caption_bytes=51))
    assert items[0].caption == "é" * 25
    assert items[0].warnings == ["caption_truncated"]
    items, _ = read(path, IngestLimits(max_caption_bytes=200))
    assert items[0].caption == caption and items[0].warnings == []


def test_json_too_large(tmp_path: Path):
    meta = json.dumps({"pad": "x" * 500})
    path = bs.write_tar(tmp_path / "j.tar", bs.sample("k", meta=meta))
    items, _ = read(path, IngestLimits(max_json_bytes=100))
    assert items[0].meta is None and items[0].warnings == ["json_too_large"]
    items, _ = read(path, IngestLimits(max_json_bytes=len(meta)))
    assert items[0].meta == meta and items[0].warnings == []


def test_pixel_limit_from_limits(tmp_path: Path):
    path = bs.write_tar(tmp_path / "p.tar", bs.sample("k", bs.jpeg_bytes(100, 100)))
    items, _ = read(path, IngestLimits(max_image_pixels=9_999))
    assert outcomes(items) == [("k", "too_many_pixels")]


def test_outcome_set_when_consumer_stops_early(tmp_path: Path):
    path = bs.write_tar(tmp_path / "s.tar", bs.good_members(5))
    reader = ShardReader(normalize_shard_uri(str(path)), IngestLimits())
    it = iter(reader)
    next(it)
    it.close()
    assert reader.outcome is not None and reader.outcome.samples == 1


def test_reader_never_raises_on_corrupted_bytes(tmp_path: Path):
    clean = bs.tar_bytes(bs.good_members(6))
    rng = random.Random(7)
    for trial in range(40):
        data = bytearray(clean)
        for _ in range(rng.randint(1, 20)):
            pos = rng.randrange(len(data))
            data[pos] = rng.randrange(256)
        if trial % 4 == 0:
            data = data[: rng.randrange(len(data))]
        path = tmp_path / f"f{trial}.tar"
        path.write_bytes(bytes(data))
        items, reader = read(path)  # asserts accounting; must not raise
        assert reader.outcome.status in ("ok", "truncated", "failed")
        assert all(isinstance(i, IngestedSample | QuarantinedItem) for i in items)
