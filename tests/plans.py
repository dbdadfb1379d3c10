"""Walking Spark's executed physical plans from the tests (adaptive stages and caches included)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pyspark.sql import DataFrame


def nodes(plan: Any) -> Iterator[Any]:
    """Every node of an executed plan, through AQE stages, cached relations and subqueries."""
    cls = plan.getClass().getSimpleName()
    if cls == "AdaptiveSparkPlanExec":
        yield from nodes(plan.executedPlan())
        return
    yield plan
    inner = []
    if "QueryStageExec" in cls:
        inner.append(plan.plan())
    if cls == "InMemoryTableScanExec":
        inner.append(plan.relation().cachedPlan())
    for seq in (plan.children(), plan.subqueries()):
        inner += [seq.apply(i) for i in range(seq.size())]
    for child in inner:
        yield from nodes(child)


def exchanges(df: DataFrame) -> list[tuple[str, list[str]]]:
    """(node name, output columns) of every Exchange the executed plan of `df` ran."""
    found = []
    for node in nodes(df._jdf.queryExecution().executedPlan()):
        if "Exchange" in node.getClass().getSimpleName():
            out = node.output()
            found.append((node.nodeName(), [out.apply(i).name() for i in range(out.size())]))
    return found
