"""The RAPIDS explain-only report for the filter query, produced here without a GPU or driver."""

from __future__ import annotations

import json

from spark_jobs import filter as filter_job
from spark_jobs.gpu_plan import gpu_report, parse_report
from tests.test_filter import cfg_like, fake_images_and_scores

SAMPLE = """\
!Exec <ProjectExec> cannot run on GPU because not all expressions can be replaced
  @Expression <AttributeReference> id#0L could run on GPU
  !Expression <Rand> rand(1) cannot run on GPU because expression Rand is not supported
  *Exec <FilterExec> will run on GPU
    *Expression <GreaterThanOrEqual> (x#1 >= 5.0) will run on GPU
    *Exec <FileSourceScanExec> will run on GPU
"""


def test_parse_report_verdicts() -> None:
    v = parse_report(SAMPLE)
    assert [(x.kind, x.operator, x.on_gpu, x.depth) for x in v] == [
        ("Exec", "ProjectExec", False, 0),
        ("Expression", "AttributeReference", True, 1),
        ("Expression", "Rand", False, 1),
        ("Exec", "FilterExec", True, 1),
        ("Expression", "GreaterThanOrEqual", True, 2),
        ("Exec", "FileSourceScanExec", True, 2),
    ]
    assert v[0].reason == "not all expressions can be replaced"
    assert v[2].reason == "expression Rand is not supported"
    assert v[4].description == "(x#1 >= 5.0)"


def test_filter_plan_runs_on_gpu_per_rapids_report(spark, make_cfg) -> None:
    """ExplainPlan.explainPotentialGpuPlan works with the jar on the classpath, plugin off.

    The filter and projection operators and every expression of the predicates are reported
    as able to run on GPU. The Delta scans are reported too (their line is asserted present).
    """
    preds = ["aesthetic_score >= 5", "nsfw_score < 0.2", "width / height BETWEEN 0.5 AND 2",
             "caption IS NOT NULL"]  # fmt: skip
    base = make_cfg()
    fake_images_and_scores(spark, base, 8)
    cfg = cfg_like(base, f"filter.predicates={json.dumps(preds)}")
    _, _, curated, _ = filter_job.curated_frame(spark, cfg, filter_job.check_predicates(cfg))
    report = gpu_report(curated)
    print(report.text)  # shown with -s; the README quotes it
    verdicts = report.verdicts
    filters = [v for v in verdicts if v.operator == "FilterExec"]
    projects = [v for v in verdicts if v.operator == "ProjectExec"]
    assert filters and projects, report.text
    assert all(v.on_gpu for v in filters + projects), report.text
    lines = report.text.splitlines()
    for expr in ("GreaterThanOrEqual", "LessThan", "Divide", "IsNotNull", "And", "EqualTo"):
        found = [v for v in verdicts if v.kind == "Expression" and v.operator == expr]
        assert found and all(v.on_gpu for v in found), (expr, report.text)
    assert any("aesthetic_score" in line and "will run on GPU" in line for line in lines)
    assert any(v.operator.endswith("ScanExec") for v in verdicts), report.text
    assert report.summary_lines()
