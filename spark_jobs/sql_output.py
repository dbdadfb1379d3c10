"""Printing query results as a table, JSON or CSV."""

from __future__ import annotations

import csv
import json
import sys
from datetime import date, datetime
from decimal import Decimal
from typing import Any


def plain(value: Any) -> Any:
    """A query value as JSON-friendly Python (bytes summarised, times as ISO text)."""
    if isinstance(value, (bytes, bytearray)):
        return f"<{len(value)} bytes>"
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if hasattr(value, "asDict"):
        return {k: plain(v) for k, v in value.asDict().items()}
    return value


def print_rows(columns: list[str], rows: list[Any], fmt: str) -> None:
    """Write rows to stdout: `json` = one JSON array, `csv` with a header, or a rich table."""
    records = [{c: plain(r[i]) for i, c in enumerate(columns)} for r in rows]
    if fmt == "json":
        print(json.dumps(records, default=str))
    elif fmt == "csv":
        w = csv.writer(sys.stdout)
        w.writerow(columns)
        for rec in records:
            w.writerow([json.dumps(v) if isinstance(v, (list, dict)) else v for v in rec.values()])
    else:
        from rich.console import Console
        from rich.table import Table

        t = Table(*columns)
        for rec in records:
            t.add_row(*[("NULL" if v is None else str(v)) for v in rec.values()])
        Console(file=sys.stdout, soft_wrap=True).print(t)
        print(f"({len(records)} rows)", file=sys.stderr)
