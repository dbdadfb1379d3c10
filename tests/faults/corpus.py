"""A corpus of bad and unusual input: every broken-sample kind ingest quarantines, plus the
hostile-but-valid ones (EXIF rotation, 1x60000 strips, 2 MB captions, 10k-deep JSON, UTF-16
captions, path-traversal keys, content that disagrees with its extension).

`write_corpus(dir)` writes the shards and returns {shard file name: {key: outcome}}, outcome
"image" or the quarantine reason (badshards' convention). `tar_keys` counts the samples of a
written tar independently of the reader under test.
"""

from __future__ import annotations

import io
import tarfile
from collections import Counter
from pathlib import Path

from PIL import Image

from curator_udfs.shard_reader import split_member_name
from tests import badshards

# `--set` overrides the corpus is meant to run with: a size cap the big image exceeds.
CORPUS_SETS: tuple[str, ...] = ("ingest.max_image_bytes=150000", "ingest.shards_per_batch=16")
# Ingested samples whose width x height must come out as displayed (EXIF applied).
DISPLAYED_SIZE: dict[str, tuple[int, int]] = {
    "exif6": (20, 40),
    "exif8": (20, 40),
    "exif3": (40, 20),
    "strip_wide": (4000, 1),
    "strip_tall": (1, 4000),
    "strip_huge": (60000, 1),
}


def exif_jpeg(orientation: int, w: int = 40, h: int = 20) -> bytes:
    """A JPEG stored w x h with the given EXIF orientation tag."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    return badshards.encode(badshards._image(w, h, "RGB"), "JPEG", exif=exif.tobytes())


def strip_png(w: int, h: int) -> bytes:
    """A one-pixel-thin PNG strip (tiny file, extreme aspect ratio)."""
    return badshards.encode(Image.new("L", (w, h), 128), "PNG")


def cut_pixels_jpeg() -> bytes:
    """A JPEG whose header parses but whose pixel data is cut off (fails only at embed)."""
    data = badshards.jpeg_bytes(96, 96, quality=95)
    return data[: len(data) // 2]


def deep_json(depth: int, kind: str = "[") -> str:
    """Valid JSON nested ``depth`` levels deep."""
    if kind == "[":
        return "[" * depth + "1" + "]" * depth
    return '{"a":' * depth + "1" + "}" * depth


def _hostile_shard(path: Path) -> dict[str, str]:
    """The valid-but-hostile samples (all ingested) and two more quarantine kinds."""
    m: list[badshards.Member] = []
    expected: dict[str, str] = {}

    def add(key: str, outcome: str, members: list[badshards.Member]) -> None:
        m.extend(members)
        expected[key] = outcome

    add("exif6", "image", badshards.sample("exif6", exif_jpeg(6)))
    add("exif8", "image", badshards.sample("exif8", exif_jpeg(8)))
    add("exif3", "image", badshards.sample("exif3", exif_jpeg(3)))
    add("strip_wide", "image", badshards.sample("strip_wide", strip_png(4000, 1), "png"))
    add("strip_tall", "image", badshards.sample("strip_tall", strip_png(1, 4000), "png"))
    add("strip_huge", "image", badshards.sample("strip_huge", strip_png(60000, 1), "png"))
    add("pngasjpg", "image", badshards.sample("pngasjpg", badshards.png_bytes(), "jpg"))
    add("webpasgif", "image", badshards.sample("webpasgif", badshards.webp_bytes(), "gif"))
    add("bigcaption", "image", badshards.sample("bigcaption", caption="word " * 400_000))
    utf16 = "légende ünïcode".encode("utf-16")
    add("utf16", "image", badshards.sample("utf16", caption=utf16))
    add("latin1", "image", badshards.sample("latin1", caption="café crème".encode("latin-1")))
    for depth in (900, 990, 10_000):
        for kind in "[{":
            key = f"deep{depth}{'obj' if kind == '{' else 'arr'}"
            add(key, "image", badshards.sample(key, meta=deep_json(depth, kind)))
    add("../../escape", "image", badshards.sample("../../escape"))
    add("/abs/rooted", "image", badshards.sample("/abs/rooted"))
    add("cutpixels", "image", badshards.sample("cutpixels", cut_pixels_jpeg()))
    big = badshards.jpeg_bytes(64, 64)
    add("toobig", "image_too_large", badshards.sample("toobig", big + b"\0" * 200_000))
    add("spaces in key", "image", badshards.sample("spaces in key"))
    badshards.write_tar(path, m)
    return expected


def _empty_tar(path: Path) -> dict[str, str]:
    badshards.write_tar(path, [])
    return {}


def write_corpus(d: Path) -> dict[str, dict[str, str]]:
    """Every shard of the corpus; {file name: {key: "image" | quarantine reason}}."""
    d.mkdir(parents=True, exist_ok=True)
    return {
        "mixed.tar": badshards.write_mixed_bad_shard(d / "mixed.tar"),
        "mixed_gz.tar.gz": badshards.write_mixed_bad_shard(d / "mixed_gz.tar.gz", gz=True),
        "hostile.tar": _hostile_shard(d / "hostile.tar"),
        "cut.tar": badshards.write_truncated_tar(d / "cut.tar"),
        "cut_gz.tar.gz": badshards.write_truncated_tar(d / "cut_gz.tar.gz", gz=True),
        "cut_boundary.tar": badshards.write_truncated_at_boundary(d / "cut_boundary.tar"),
        "notatar.tar": badshards.write_not_a_tar(d / "notatar.tar"),
        "oversized.tar": badshards.write_oversized_image_shard(d / "oversized.tar"),
        "empty.tar": _empty_tar(d / "empty.tar"),
    }


def tar_keys(path: Path) -> Counter[str]:
    """Samples per key in a tar as written: runs of consecutive members with one key (a
    directory entry is one on its own); a file that is not a tar at all counts as key "".

    Read with plain tarfile, headers only, up to where the archive is cut.
    """
    keys: Counter[str] = Counter()
    try:
        tar = tarfile.open(path, mode="r|*")
    except tarfile.TarError:
        return Counter({"": 1})
    previous: str | None = None
    try:
        for info in tar:
            key = info.name if info.isdir() else split_member_name(info.name)[0]
            if info.isdir() or key != previous:
                keys[key] += 1
            previous = None if info.isdir() else key
    except (tarfile.TarError, EOFError, OSError):
        pass  # truncated: the members before the cut (and the cut one) were counted
    return keys


def read_all(data: bytes) -> list[str]:
    """Member names of a tar held in memory (export checks)."""
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return tar.getnames()
