"""The options every job command shares (their types, for typer), importable by job modules."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

ConfigOpt = Annotated[
    Path | None, typer.Option("--config", help="pipeline YAML (default: the embedded default)")
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="override a key: dotted.key=value (value is YAML); repeatable"),
]
WarehouseOpt = Annotated[
    str | None, typer.Option("--warehouse", help="directory of the Delta tables")
]
JsonOpt = Annotated[
    bool, typer.Option("--json", help="print the summary as one JSON object on the last line")
]
AsOfOpt = Annotated[
    str | None,
    typer.Option(
        "--as-of",
        help="a version of `curated` (integer) or a timestamp: read the tables as they were then",
    ),
]
