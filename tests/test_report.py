"""The curation report: pure-Python rendering, and the real page in headless Chromium."""

from __future__ import annotations

import io
import re
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from PIL import Image

from curator_udfs import report_html as rh

CHROMIUM = Path("/usr/bin/chromium")
SECTIONS = ("funnel", "scores", "clusters", "groups", "quarantine")


def _png(color: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), color).save(buf, "PNG")
    return buf.getvalue()


def _data() -> dict:
    return {
        "title": "t",
        "funnel": [
            {"stage": "ingested", "count": 100},
            {"stage": "not quarantined", "count": 90, "breakdown": {"truncated_tar": 10}},
            {"stage": "scored", "count": 90},
            {"stage": "filtered", "count": None},
        ],
        "histograms": {
            "aesthetic_score": rh.histogram([1, 2, 5, 6, 7, 7.5], bins=10),
            "nsfw_score": None,
        },
        "predicates": ["aesthetic_score >= 5", "nsfw_score < 0.2"],
        "cluster_sizes": {2: 5, 3: 1},
        "duplicate_groups": [
            {
                "method": "exact",
                "kept": {"sample_id": "aa", "thumb": rh.thumbnail_data_uri(_png((200, 0, 0)))},
                "duplicates": [{"sample_id": "bb", "thumb": None, "similarity": 1.0}],
            }
        ],
        "quarantine": [
            {"reason": "bad <image>", "count": 3, "examples": [{"shard": "0.tar", "key": "k"}]}
        ],
    }


def test_parse_thresholds() -> None:
    preds = [
        "aesthetic_score >= 5",
        "nsfw_score < 0.2 AND width >= 64",
        "0.5 < aesthetic_score",
        "aesthetic_score BETWEEN 1 AND 9.5",
        "lower(caption) LIKE '%aesthetic_score > 3%'",
    ]
    assert rh.parse_thresholds(preds, "aesthetic_score") == [
        (">=", 5.0),
        (">", 0.5),
        (">=", 1.0),
        ("<=", 9.5),
    ]
    assert rh.parse_thresholds(preds, "nsfw_score") == [("<", 0.2)]


def test_histogram_and_thumbnail() -> None:
    h = rh.histogram([0, 1, 2, 3, float("nan"), None], bins=3)  # type: ignore[list-item]
    assert h == {"lo": 0.0, "hi": 3.0, "counts": [1, 1, 2]}
    uri = rh.thumbnail_data_uri(_png((0, 0, 255)), size=16)
    assert uri is not None and uri.startswith("data:image/jpeg;base64,")
    assert rh.thumbnail_data_uri(b"not an image") is None


def test_render_report_plain_data() -> None:
    html = rh.render_report(_data())
    for s in SECTIONS:
        assert f'<section id="{s}">' in html
    assert html.count('class="chart histogram"') == 1  # nsfw has no data
    assert 'class="threshold"' in html and "&gt;= 5" in html
    assert "bad &lt;image&gt;" in html  # escaped
    assert "data:image/jpeg;base64," in html and "kept" in html
    assert "http://" not in html and "https://" not in html and "<script" not in html


def test_warnings_and_lowest_clip_scores_render() -> None:
    data = _data() | {
        "warnings": ["random weights: the heads <a> are random-init"],
        "lowest_clip_scores": [
            {"sample_id": "cc", "thumb": rh.thumbnail_data_uri(_png((0, 200, 0))),
             "caption": "a <b>cat</b>", "clip_score": 0.0123},
        ],
    }  # fmt: skip
    html = rh.render_report(data)
    assert html.index('id="warnings"') < html.index('id="funnel"')  # read before the numbers
    assert "the heads &lt;a&gt; are random-init" in html
    assert 'id="lowclip"' in html and "clip 0.012" in html and "a &lt;b&gt;cat&lt;/b&gt;" in html
    assert 'id="lowclip"' not in rh.render_report(_data())  # no clip_score column: no section
    assert 'id="warnings"' not in rh.render_report(_data())


def test_weight_warnings_say_when_scores_are_noise(make_cfg) -> None:  # type: ignore[no-untyped-def]
    from spark_jobs.report import weight_warnings

    demo = make_cfg("embed.model=test_vit", "embed.pretrained=false",
                    "classifiers=[{name: aesthetic, random_init: true}]")  # fmt: skip
    assert [w.split(":")[0] for w in weight_warnings(demo)] == ["random weights"] * 2
    assert "aesthetic" in weight_warnings(demo)[1]
    dct = make_cfg("embed.embedder_class=curator_udfs.dct_embedder:DctImageEmbedder",
                   "classifiers=[]")  # fmt: skip
    assert weight_warnings(dct) == []  # the DCT descriptor has no weights to be random


def test_every_section_says_not_run_yet() -> None:
    html = rh.render_report({})
    assert html.count("not run yet") == len(SECTIONS)
    assert "<svg" not in html


# ---- the real page: tables built here, report rendered, loaded in headless Chromium ----------
def _chromium(args: list[str], tmp: Path) -> subprocess.CompletedProcess:
    if not CHROMIUM.exists():
        pytest.fail(
            "headless Chromium is needed for this test: run `make chromium` "
            "(apt-get update && apt-get install -y chromium)"
        )
    base = [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--hide-scrollbars",
        f"--user-data-dir={tmp / 'chromium-profile'}",
        "--enable-logging=stderr",
        "--v=0",
    ]
    return subprocess.run(base + args, capture_output=True, text=True, timeout=180)


def console_errors(stderr: str) -> list[str]:
    """Lines of Chromium's log that report a page error or an error logged to the console."""
    return [
        line
        for line in stderr.splitlines()
        if "Uncaught" in line or re.search(r"CONSOLE\(\d+\)\].*(error|Error)", line)
    ]


def test_console_error_detection_works(tmp_path: Path) -> None:
    page = tmp_path / "bad.html"
    page.write_text("<html><body><script>throw new Error('boom')</script></body></html>")
    proc = _chromium(["--dump-dom", page.as_uri()], tmp_path)
    assert console_errors(proc.stderr), proc.stderr[-2000:]


def _scores_and_duplicates(spark, cfg) -> None:  # type: ignore[no-untyped-def]
    from spark_jobs.tables import read_table, table_path

    ids = [r["sample_id"] for r in read_table(spark, cfg, "images").orderBy("sample_id").collect()]
    at = datetime.now(UTC)
    rows = []
    for i, sid in enumerate(ids):
        emb = [float((i * 7 + j) % 5) for j in range(4)]
        err = "decode failed" if i == 3 else None
        rows.append(
            (sid, "test_vit+random", None if err else emb, None if err else 4,
             None if err else (i * 37 % 100) / 10, None if err else (i * 13 % 100) / 100,
             err, at, "r1")
        )  # fmt: skip
    spark.createDataFrame(
        rows,
        "sample_id STRING, model STRING, embedding ARRAY<FLOAT>, embedding_dim INT, "
        "aesthetic_score DOUBLE, nsfw_score DOUBLE, error STRING, scored_at TIMESTAMP, "
        "run_id STRING",
    ).write.format("delta").save(table_path(cfg, "scores"))
    dups = [
        (ids[1], ids[0], ids[0], 1.0, "exact", None, None, "r2"),
        (ids[2], ids[0], ids[1], 0.995, "semantic", 0.01, "c7", "r2"),
        (ids[5], ids[4], ids[4], 0.993, "semantic", 0.01, "c7", "r2"),
        (ids[6], ids[4], ids[4], 0.991, "semantic", 0.01, "c8", "r2"),
    ]
    spark.createDataFrame(
        dups,
        "sample_id STRING, duplicate_of STRING, similar_to STRING, similarity DOUBLE, "
        "method STRING, eps DOUBLE, cluster STRING, run_id STRING",
    ).write.format("delta").save(table_path(cfg, "duplicates"))


def test_report_in_headless_chromium(spark, make_cfg: Callable, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from curator_udfs.sample_shards import write_sample_shards
    from spark_jobs import ingest, report
    from spark_jobs.catalog import register_tables
    from tests import badshards

    shards = tmp_path / "shards"
    write_sample_shards(shards, shards=2, per_shard=10, seed=3)
    badshards.write_tar(
        shards / "00009.tar",
        [*badshards.good_members(2, prefix="z"), ("bad.jpg", b"not an image at all")],
    )
    cfg = make_cfg(
        "embed.model=test_vit",
        "embed.pretrained=false",
        "filter.predicates=['aesthetic_score >= 5', 'nsfw_score < 0.5']",
    )
    register_tables(spark, cfg)
    ingest.run(spark, cfg, inputs=[str(shards)])
    _scores_and_duplicates(spark, cfg)
    out = tmp_path / "report"
    summary = report.run(spark, cfg, out=out)
    page = out / "index.html"
    assert summary.extra["report"] == str(page.resolve()) and page.is_file()
    html = page.read_text(encoding="utf-8")
    assert "http://" not in html and "https://" not in html

    shot = tmp_path / "shot.png"
    proc = _chromium(["--window-size=1280,2000", f"--screenshot={shot}", page.as_uri()], tmp_path)
    assert shot.is_file(), proc.stderr[-2000:]
    dom = _chromium(["--dump-dom", page.as_uri()], tmp_path)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert not console_errors(proc.stderr + dom.stderr)
    for s in SECTIONS:
        assert f'id="{s}"' in dom.stdout
    assert dom.stdout.count('class="chart histogram"') == 2
    assert dom.stdout.count('class="threshold"') == 2
    assert 'class="kept"' in dom.stdout and "data:image/jpeg;base64," in dom.stdout
    assert "not run yet" in dom.stdout  # no filter_stats / curated / export yet

    with Image.open(shot) as img:
        assert img.size == (1280, 2000)
        top = img.convert("RGB").crop((0, 0, 1280, 1400))
        colours = top.getcolors(maxcolors=1 << 20) or []
        assert len(colours) > 50, f"screenshot looks blank: {len(colours)} colours"
    (Path(__file__).resolve().parents[1] / ".pytest_cache").mkdir(exist_ok=True)
    shot_copy = Path(__file__).resolve().parents[1] / ".pytest_cache" / "report-screenshot.png"
    shot_copy.write_bytes(shot.read_bytes())
