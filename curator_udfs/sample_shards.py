"""Realistic synthetic WebDataset shards in img2dataset's layout, with planted duplicates.

Demos, benchmarks and tests need input that looks like img2dataset output (tar shards plus a
parquet and a stats file per shard) and that has known exact and near duplicates, so that
dedup can be checked against ``_planted.json``. Everything is a pure function of the seed:
the same seed gives byte-identical files.
"""

from __future__ import annotations

import hashlib
import io
import json
import multiprocessing
import os
import random
import tarfile
import threading
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageDraw, ImageFont

__all__ = ["SampleShardsReport", "write_sample_shards"]

FIXED_MTIME = 1_700_000_000  # member mtimes and the fake stats timestamps
EXACT_FRACTION = 0.03
NEAR_FRACTION = 0.05
NEAR_KINDS = ("reencode", "resize", "crop")
PARALLEL_MIN_SAMPLES = 2000  # below this, starting worker processes costs more than it saves
_FORMATS = (("JPEG", "jpg", 0.7), ("PNG", "png", 0.2), ("WEBP", "webp", 0.1))

_COLOURS = {
    "red": (200, 40, 40),
    "orange": (235, 140, 30),
    "yellow": (240, 210, 50),
    "green": (60, 160, 70),
    "teal": (30, 150, 150),
    "blue": (40, 80, 200),
    "purple": (130, 60, 170),
    "pink": (235, 120, 170),
    "brown": (120, 80, 40),
    "black": (20, 20, 20),
    "white": (240, 240, 240),
    "grey": (128, 128, 128),
}
_SHAPES = ("circle", "square", "triangle", "line", "star", "ring")
_MOODS = ("bright", "calm", "busy", "minimal", "colourful", "dark", "soft", "bold")
_SCENES = ("abstract painting", "poster", "pattern", "sketch", "illustration", "photo")
_WORDS = ("SALE", "hello", "2024", "cafe", "OPEN", "river", "night", "data", "spark", "lake")


@dataclass
class SampleShardsReport:
    """What was written: tar paths, sample count, planted pair counts (pairs in _planted.json)."""

    paths: list[Path]
    samples: int
    exact_pairs: int
    near_pairs: int
    planted_path: Path | None = None


@dataclass
class _Plan:
    """Everything that decides one sample; the image itself is rendered from ``seed``."""

    key: str
    seed: int
    width: int
    height: int
    fmt: str
    ext: str
    quality: int
    source: int | None = None  # index of the sample this one duplicates
    kind: str | None = None  # "exact" or one of NEAR_KINDS
    scale: float = 1.0
    caption: str = ""


@lru_cache(maxsize=1)
def _noise_texture() -> Image.Image:
    """A fixed RGB noise texture, cropped per image (much cheaper than fresh noise)."""
    rng = np.random.default_rng(12345)
    data = np.clip(rng.normal(128, 60, size=(512, 512, 3)), 0, 255).astype(np.uint8)
    return Image.fromarray(data, "RGB")


@lru_cache(maxsize=8)
def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


def _jitter(rng: random.Random, rgb: tuple[int, int, int], amount: int = 30) -> tuple[int, ...]:
    return tuple(max(0, min(255, c + rng.randint(-amount, amount))) for c in rgb)


def _render(plan: _Plan) -> tuple[Image.Image, str]:
    """Draw the image of a plan (gradient, shapes, lines, text, noise) and its caption."""
    rng = random.Random(plan.seed)
    w, h = plan.width, plan.height
    names = list(_COLOURS)
    corners = [_jitter(rng, _COLOURS[rng.choice(names)], 40) for _ in range(4)]
    grid = Image.frombytes("RGB", (2, 2), bytes(c for rgb in corners for c in rgb))
    img = grid.resize((w, h), Image.Resampling.BILINEAR)
    draw = ImageDraw.Draw(img)
    drawn: list[str] = []
    for _ in range(rng.randint(2, 7)):
        colour = rng.choice(names)
        fill = _jitter(rng, _COLOURS[colour])
        shape = rng.choice(_SHAPES)
        x0, y0 = rng.randrange(-w // 4, w), rng.randrange(-h // 4, h)
        size = rng.randint(max(4, min(w, h) // 10), max(8, min(w, h) // 2))
        box = (x0, y0, x0 + size, y0 + size)
        if shape == "circle":
            draw.ellipse(box, fill=fill)
        elif shape == "square":
            draw.rectangle(box, fill=fill)
        elif shape == "triangle":
            draw.polygon([(x0, y0 + size), (x0 + size, y0 + size), (x0 + size // 2, y0)], fill=fill)
        elif shape == "ring":
            draw.ellipse(box, outline=fill, width=max(1, size // 8))
        elif shape == "star":
            draw.regular_polygon(
                (x0 + size / 2, y0 + size / 2, size / 2), 5, fill=fill, rotation=rng.randint(0, 72)
            )
        else:
            end = (rng.randrange(w), rng.randrange(h))
            draw.line([(x0, y0), end], fill=fill, width=rng.randint(1, 6))
        drawn.append(f"{colour} {shape}")
    text = ""
    if rng.random() < 0.4:
        text = rng.choice(_WORDS)
        draw.text(
            (rng.randrange(max(1, w // 2)), rng.randrange(max(1, h // 2))),
            text,
            fill=_jitter(rng, _COLOURS[rng.choice(names)]),
            font=_font(rng.choice((10, 14, 22))),
        )
    if plan.fmt != "PNG":
        # Sensor-like noise for photos; PNGs stay clean like real graphics (and compress fast).
        noise = _noise_texture()
        if w > noise.width or h > noise.height:
            noise = noise.resize((max(w, noise.width), max(h, noise.height)))
        ox, oy = rng.randrange(noise.width - w + 1), rng.randrange(noise.height - h + 1)
        img = Image.blend(img, noise.crop((ox, oy, ox + w, oy + h)), rng.uniform(0.02, 0.12))
    caption = f"a {rng.choice(_MOODS)} {rng.choice(_SCENES)} with a " + ", a ".join(drawn[:3])
    if text:
        caption += f' and the word "{text}"'
    return img, caption


def _encode(img: Image.Image, fmt: str, quality: int) -> bytes:
    out = io.BytesIO()
    if fmt == "JPEG":
        img.save(out, "JPEG", quality=quality)
    elif fmt == "PNG":
        img.save(out, "PNG", compress_level=1)
    else:
        img.save(out, "WEBP", quality=quality, method=0)
    return out.getvalue()


def _source_bytes(plan: _Plan) -> tuple[bytes, str]:
    img, caption = _render(plan)
    return _encode(img, plan.fmt, plan.quality), caption


def _sample_bytes(plan: _Plan, plans: list[_Plan], min_size: int) -> tuple[bytes, int, int, str]:
    """Image bytes, width, height and caption of a sample; duplicates derive from the source."""
    if plan.source is None:
        data, caption = _source_bytes(plan)
        return data, plan.width, plan.height, caption
    source = plans[plan.source]
    data, caption = _source_bytes(source)
    if plan.kind == "exact":
        return data, source.width, source.height, caption
    img = Image.open(io.BytesIO(data)).convert("RGB")
    w, h = img.size
    if plan.kind == "resize":
        nw, nh = max(min_size, round(w * plan.scale)), max(min_size, round(h * plan.scale))
        img = img.resize((min(nw, w), min(nh, h)), Image.Resampling.BILINEAR)
    elif plan.kind == "crop":
        cw = max(min(min_size, w), round(w * plan.scale))
        ch = max(min(min_size, h), round(h * plan.scale))
        rng = random.Random(plan.seed)
        x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
        img = img.crop((x, y, x + cw, y + ch))
    return _encode(img, "JPEG", plan.quality), img.width, img.height, caption


def _make_plans(
    shards: int, per_shard: int, seed: int, min_size: int, max_size: int
) -> list[_Plan]:
    """Decide every sample up front: size, format, and which ones duplicate which."""
    rng = random.Random(seed)
    plans: list[_Plan] = []
    weights = [weight for _, _, weight in _FORMATS]
    for shard in range(shards):
        for index in range(per_shard):
            fmt, ext, _ = rng.choices(_FORMATS, weights)[0]
            plans.append(
                _Plan(
                    key=f"{shard:05d}{index:04d}",
                    seed=rng.getrandbits(63),
                    width=rng.randint(min_size, max_size),
                    height=rng.randint(min_size, max_size),
                    fmt=fmt,
                    ext=ext,
                    quality=rng.randint(70, 95),
                )
            )
    total = len(plans)
    n_exact = round(total * EXACT_FRACTION)
    n_near = round(total * NEAR_FRACTION)
    if total >= 10:
        n_exact, n_near = max(1, n_exact), max(1, n_near)
    dup_positions = (
        rng.sample(range(1, total), min(total - 1, n_exact + n_near)) if total > 1 else []
    )
    dup_set = set(dup_positions)
    for i, pos in enumerate(dup_positions):
        sources = [j for j in range(pos) if j not in dup_set]
        if not sources:
            continue
        plan = plans[pos]
        plan.source = rng.choice(sources)
        if i < n_exact:
            plan.kind, plan.fmt, plan.ext = "exact", plans[plan.source].fmt, plans[plan.source].ext
        else:
            plan.kind = rng.choice(NEAR_KINDS)
            plan.fmt, plan.ext = "JPEG", "jpg"
            plan.scale = rng.uniform(0.5, 0.9) if plan.kind == "resize" else rng.uniform(0.85, 0.95)
            src_q = plans[plan.source].quality
            plan.quality = rng.choice([q for q in range(60, 96) if abs(q - src_q) >= 10])
    return plans


def _tar_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o644, FIXED_MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    tar.addfile(info, io.BytesIO(data))


def _write_shard(out_dir: Path, shard: int, plans: list[_Plan], min_size: int) -> Path:
    """Write one tar shard plus its parquet and stats files (tar via write-then-rename)."""
    rows: list[dict[str, object]] = []
    tar_path = out_dir / f"{shard:05d}.tar"
    tmp_path = out_dir / f".{shard:05d}.tar.tmp"
    with tarfile.open(tmp_path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for plan in plans:
            if not plan.key.startswith(f"{shard:05d}"):
                continue
            data, width, height, caption = _sample_bytes(plan, plans, min_size)
            digest = hashlib.sha256(data).hexdigest()
            url_id = hashlib.sha1(f"{plan.seed}".encode()).hexdigest()[:16]
            row: dict[str, object] = {
                "url": f"https://images.example.org/{url_id[:2]}/{url_id}.{plan.ext}",
                "caption": caption,
                "key": plan.key,
                "status": "success",
                "error_message": None,
                "width": width,
                "height": height,
                "original_width": width,
                "original_height": height,
                "sha256": digest,
            }
            members = {
                plan.ext: data,
                "txt": caption.encode("utf-8"),
                "json": json.dumps(row, indent=4).encode("utf-8"),
            }
            for ext in sorted(members):  # webdataset's TarWriter writes extensions sorted
                _tar_member(tar, f"{plan.key}.{ext}", members[ext])
            rows.append(row)
    os.replace(tmp_path, tar_path)
    columns = [
        "key",
        "url",
        "caption",
        "status",
        "error_message",
        "width",
        "height",
        "original_width",
        "original_height",
        "sha256",
    ]
    types = {
        "width": pa.int64(),
        "height": pa.int64(),
        "original_width": pa.int64(),
        "original_height": pa.int64(),
    }
    table = pa.table(
        {c: pa.array([r[c] for r in rows], type=types.get(c, pa.string())) for c in columns}
    )
    pq.write_table(table, out_dir / f"{shard:05d}.parquet")
    start = FIXED_MTIME + shard * 60
    duration = round(0.01 * len(rows), 3)
    stats = {
        "count": len(rows),
        "successes": len(rows),
        "failed_to_download": 0,
        "failed_to_resize": 0,
        "duration": duration,
        "start_time": start,
        "end_time": start + duration,
        "status": "success",
    }
    (out_dir / f"{shard:05d}_stats.json").write_text(json.dumps(stats, indent=4))
    return tar_path


def write_sample_shards(
    out_dir: str | Path,
    *,
    shards: int = 4,
    per_shard: int = 100,
    seed: int = 0,
    min_size: int = 64,
    max_size: int = 384,
) -> SampleShardsReport:
    """Write ``shards`` img2dataset-style shards of ``per_shard`` samples into ``out_dir``.

    Keys are ``{shard:05d}{index:04d}``. About 3 % of samples are exact duplicates (same
    bytes, another key) and 5 % near duplicates (JPEG re-encode, 50-90 % resize or 85-95 %
    crop) of an earlier sample, possibly in another shard; ``_planted.json`` lists them.
    Stats timestamps are fixed so that the same seed gives byte-identical output.
    """
    if shards < 1 or per_shard < 1 or per_shard > 10_000:
        raise ValueError("need shards >= 1 and 1 <= per_shard <= 10000 (4-digit index in keys)")
    if not 1 <= min_size <= max_size:
        raise ValueError(f"need 1 <= min_size <= max_size, got {min_size}, {max_size}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plans = _make_plans(shards, per_shard, seed, min_size, max_size)
    workers = min(shards, os.cpu_count() or 1)
    # Shards are independent pure functions of the plan: render them in parallel processes.
    # Only fork, and only from a single-threaded process (forking a process with threads, e.g.
    # a Spark driver's py4j threads, can deadlock); spawn would re-import the caller's
    # __main__, which breaks scripts without a main guard. Otherwise write serially.
    parallel = (
        workers > 1
        and len(plans) >= PARALLEL_MIN_SAMPLES
        and threading.active_count() == 1
        and "fork" in multiprocessing.get_all_start_methods()
    )
    if parallel:
        ctx = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            futures = [pool.submit(_write_shard, out, s, plans, min_size) for s in range(shards)]
            paths = [f.result() for f in futures]
    else:
        paths = [_write_shard(out, shard, plans, min_size) for shard in range(shards)]
    exact = [
        (plans[p.source].key, p.key) for p in plans if p.kind == "exact" and p.source is not None
    ]
    near = [
        (plans[p.source].key, p.key, p.kind)
        for p in plans
        if p.kind in NEAR_KINDS and p.source is not None
    ]
    planted = {"exact": [list(pair) for pair in exact], "near": [list(t) for t in near]}
    (out / "_planted.json").write_text(json.dumps(planted, indent=2))
    return SampleShardsReport(
        paths=paths,
        samples=len(plans),
        exact_pairs=len(exact),
        near_pairs=len(near),
        planted_path=out / "_planted.json",
    )
