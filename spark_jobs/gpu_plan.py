"""The RAPIDS Accelerator's explain-only report for a DataFrame, on a machine without a GPU.

With the RAPIDS jar on the classpath (`spark.with_rapids_jar: true`, or the gpu-cluster
profile) and the plugin *off*, `com.nvidia.spark.rapids.ExplainPlan.explainPotentialGpuPlan`
runs the plugin's planning rules (GpuOverrides) over the query's CPU plan and returns, per
operator and expression, `will run on GPU` or `cannot run on GPU because ...`. It needs no
NVIDIA driver or CUDA: nothing is executed and no GPU memory is touched (checked here with
RAPIDS 26.08.1 on Spark 4.0.1, no driver installed). The alternative, the plugin on with
`spark.rapids.sql.mode=explainOnly`, also loads without a driver (it logs the same report at
WARN for every executed query) but needs a session of its own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pyspark.sql import DataFrame

EXPLAIN_CLASS = "com.nvidia.spark.rapids.ExplainPlan"


class GpuPlanUnavailable(RuntimeError):
    """The report cannot be produced; the message says why and what would fix it."""


@dataclass(frozen=True)
class Verdict:
    """One line of the report: an operator or expression and whether it would run on GPU."""

    depth: int
    kind: str  # Exec, Expression, Partitioning, Scan, ...
    operator: str  # ProjectExec, FilterExec, GreaterThanOrEqual, ...
    description: str
    on_gpu: bool
    reason: str | None  # why not, for `cannot run on GPU because ...`
    line: str


@dataclass(frozen=True)
class GpuReport:
    """The raw report and its parsed verdicts."""

    text: str
    verdicts: list[Verdict]

    def execs(self) -> list[Verdict]:
        return [v for v in self.verdicts if v.kind == "Exec"]

    def summary_lines(self) -> list[str]:
        """One line per operator (Exec): `on GPU` or `CPU: reason`."""
        return [
            f"{'  ' * v.depth}{v.operator}: " + ("on GPU" if v.on_gpu else f"CPU ({v.reason})")
            for v in self.execs()
        ]


_LINE = re.compile(r"^(?P<indent>\s*)(?P<mark>[*!@#$])(?P<kind>\w+) <(?P<op>[^>]+)> (?P<rest>.*)$")
_GPU_OK = (" will run on GPU", " could run on GPU")
_GPU_NO = re.compile(r" (?:cannot|will not) run on GPU(?: because (?P<why>.*))?$")


def parse_report(text: str) -> list[Verdict]:
    """Parse the report's lines (`*Exec <FilterExec> ... will run on GPU`) into verdicts.

    Marks: `*` will run on GPU, `!` cannot, `@` could (an expression whose parent decides),
    `#` removed by the plugin, `$` a plan-level note; lines that are not verdicts are skipped.
    """
    out: list[Verdict] = []
    for line in text.splitlines():
        m = _LINE.match(line)
        if m is None:
            continue
        rest = " " + m.group("rest")
        no = _GPU_NO.search(rest)
        if no is not None:
            desc, on_gpu, why = rest[: no.start()], False, (no.group("why") or "").strip()
        else:
            ok = next((s for s in _GPU_OK if rest.endswith(s)), None)
            if ok is None:
                desc, on_gpu, why = rest, m.group("mark") in "*@#", None
            else:
                desc, on_gpu, why = rest[: -len(ok)], True, None
        out.append(
            Verdict(
                depth=len(m.group("indent")) // 2,
                kind=m.group("kind"),
                operator=m.group("op"),
                description=desc.strip(),
                on_gpu=on_gpu,
                reason=why or (None if on_gpu else "see the report line"),
                line=line.rstrip(),
            )
        )
    return out


def explain_potential_gpu_plan(df: DataFrame, mode: str = "ALL") -> str:
    """The RAPIDS report for `df` as text (mode ALL or NOT_ON_GPU); the plugin need not be on."""
    from py4j.java_gateway import JavaClass

    jvm = df.sparkSession._jvm
    assert jvm is not None  # set for a classic (py4j) session, as pyspark itself asserts
    # py4j resolves names through Spark's class loader (the class path, then spark.jars); an
    # unknown name comes back as a JavaPackage instead of a JavaClass.
    if not isinstance(jvm.com.nvidia.spark.rapids.ExplainPlan, JavaClass):
        raise GpuPlanUnavailable(
            f"{EXPLAIN_CLASS} is not on the classpath; set `spark.with_rapids_jar: true` (or the "
            "gpu-cluster profile) so the session gets jars/rapids-4-spark_2.13-<version>.jar"
        )
    try:
        return str(jvm.com.nvidia.spark.rapids.ExplainPlan.explainPotentialGpuPlan(df._jdf, mode))
    except Exception as exc:  # noqa: BLE001
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise GpuPlanUnavailable(f"RAPIDS explainPotentialGpuPlan failed: {first}") from exc


def gpu_report(df: DataFrame, mode: str = "ALL") -> GpuReport:
    """Produce and parse the RAPIDS explain-only report for `df`."""
    text = explain_potential_gpu_plan(df, mode)
    return GpuReport(text=text, verdicts=parse_report(text))


def physical_plan(df: DataFrame, mode: str = "formatted") -> str:
    """Spark's own explain output (`formatted`, `extended`, ...) as a string."""
    jvm = df.sparkSession._jvm
    assert jvm is not None  # set for a classic (py4j) session, as pyspark itself asserts
    utils = jvm.org.apache.spark.sql.api.python.PythonSQLUtils
    return str(utils.explainString(df._jdf.queryExecution(), mode))
