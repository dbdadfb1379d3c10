"""The one-screen summary every job prints, and its `--json` form."""

from __future__ import annotations

import sys
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.table import Table

from spark_jobs.redact import redact


def new_run_id(job: str) -> str:
    """A sortable, unique id for one run of one job."""
    return f"{job}-{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"


@dataclass
class Summary:
    """What a job did. Balances: rows_in = rows_written + quarantined + skipped."""

    job: str
    run_id: str
    rows_in: int = 0
    rows_written: int = 0
    quarantined: int = 0
    skipped: int = 0
    seconds: float = 0.0
    unit: str = "rows"
    tables: dict[str, int] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    _t0: float = field(default_factory=time.perf_counter, repr=False)

    def finish(self) -> Summary:
        self.seconds = round(time.perf_counter() - self._t0, 3)
        return self

    def skip(self, reason: str) -> Summary:
        """Finish as a job that had nothing to do by configuration (not an error): the reason
        goes to `extra["skipped"]`, shown in the summary and in `curator run`'s stage line."""
        self.extra["skipped"] = reason
        return self.finish()

    @property
    def skip_reason(self) -> str | None:
        """Why the job skipped its work (see `skip`), None when it ran."""
        reason = self.extra.get("skipped")
        return reason if isinstance(reason, str) else None

    @property
    def throughput(self) -> float:
        return round(self.rows_in / self.seconds, 2) if self.seconds > 0 else 0.0

    @property
    def balanced(self) -> bool:
        return self.rows_in == self.rows_written + self.quarantined + self.skipped

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in asdict(self).items() if not k.startswith("_")}
        d["throughput_per_s"] = self.throughput
        d["balanced"] = self.balanced
        return redact(d)  # extra may carry user text (paths, messages): never a credential

    def render(self, console: Console | None = None) -> None:
        """Print the human summary (stdout)."""
        console = console or Console(file=sys.stdout, soft_wrap=True)
        t = Table(title=f"curator {self.job} — {self.run_id}", show_header=False, box=None)
        t.add_column(style="bold")
        t.add_column(justify="right")
        t.add_row(f"{self.unit} in", f"{self.rows_in:,}")
        t.add_row("written", f"{self.rows_written:,}")
        t.add_row("quarantined", f"{self.quarantined:,}")
        t.add_row("skipped (already done)", f"{self.skipped:,}")
        t.add_row("seconds", f"{self.seconds:,.1f}")
        t.add_row(f"{self.unit}/s", f"{self.throughput:,.1f}")
        for k, v in self.extra.items():
            t.add_row(k.replace("_", " "), f"{v:,}" if isinstance(v, int) else redact(str(v)))
        for name, n in self.tables.items():
            t.add_row(f"table {name}", f"{n:,} rows")
        console.print(t)

