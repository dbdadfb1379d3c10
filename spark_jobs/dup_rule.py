"""The duplicate rule of the filter: which `duplicates` rows take a sample out of `curated`.

One typed object for what used to be a dict turned into SQL in four places. The filter builds
it from the config (`DuplicateRule.from_config`) and records it in its curated commit's
userMetadata (`to_dict`, under the key `dedup`); lineage, `curator costs`, `curator why` and
the API read it back (`from_json`) and ask it for its SQL (`condition`). The recorded object
is the `{"exclude", "methods", "eps"}` dict filter runs have always written (format 1, so
commits older than this module parse, and older readers read newer commits); a later format
would add a `version` key, which this code refuses when it is newer than it knows.

Rows of the methods in `dedup.methods` count; semantic rows only at the rule's eps (a
duplicates table may hold the results of several thresholds), compared with `eps_condition`:
the one float equality of eps values in the project, used for reads and for the API's
replaceWhere alike.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from spark_jobs.config import Config
from spark_jobs.tables import sql_list

FORMAT_VERSION = 1
# eps values are floats from YAML, pandas and Python: equal within this, never bit for bit.
EPS_TOLERANCE = "1e-9"  # a SQL literal


def eps_condition(eps: float, column: str = "eps") -> str:
    """SQL: `column` equals `eps` within EPS_TOLERANCE (NULL, so no match, for a NULL column)."""
    return f"abs({column} - {float(eps)!r}) < {EPS_TOLERANCE}"


@dataclass(frozen=True)
class DuplicateRule:
    """Which `duplicates` rows (columns method, eps) the filter removes from `curated`.

    `exclude`: `filter.exclude_duplicates`; `methods`: `dedup.methods` in config order;
    `eps`: the one semantic threshold that counts (`filter.dedup_eps`, else the first of
    `dedup.eps`), None when none was recorded (then no semantic row counts).
    """

    exclude: bool = True
    methods: tuple[str, ...] = ()
    eps: float | None = None

    @classmethod
    def from_config(cls, cfg: Config) -> DuplicateRule:
        """The rule `cfg` asks for (what `curator filter` applies and records)."""
        eps = cfg.filter.dedup_eps
        if eps is None and cfg.dedup.eps:
            eps = cfg.dedup.eps[0]
        return cls(
            exclude=bool(cfg.filter.exclude_duplicates),
            methods=tuple(str(m) for m in cfg.dedup.methods),
            eps=None if eps is None else float(eps),
        )

    @property
    def active(self) -> bool:
        """Whether the rule can remove anything: duplicates excluded and some method listed."""
        return self.exclude and bool(self.methods)

    def condition(self, alias: str | None = None) -> str:
        """The SQL condition on `duplicates` rows that the rule counts (ignores `exclude`).

        Exact and perceptual rows have a NULL eps and count by method alone; semantic rows
        count only at `eps`. `alias` qualifies the columns (`d.method`, `d.eps`).
        """
        if not self.methods:
            return "false"
        method, eps = (f"{alias}.method", f"{alias}.eps") if alias else ("method", "eps")
        at = "false" if self.eps is None else eps_condition(self.eps, eps)
        return f"{method} IN ({sql_list(list(self.methods))}) AND ({eps} IS NULL OR {at})"

    @property
    def text(self) -> str:
        """How the rule reads in summaries and filter_stats."""
        return f"methods {list(self.methods)}, semantic eps {self.eps}"

    def to_dict(self) -> dict[str, Any]:
        """The JSON object the filter records under `dedup` in its curated commit (format 1)."""
        return {
            "exclude": self.exclude,
            "methods": list(self.methods),
            "eps": self.eps,
        }

    def to_json(self) -> str:
        """`to_dict` as JSON text."""
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, data: str | Mapping[str, Any] | None) -> DuplicateRule:
        """Parse `to_json`/`to_dict` output (a JSON text or the parsed object).

        A key the record lacks takes the default the readers before this module used
        (`exclude` true, no methods, no eps), so an empty or missing record (None) gives a
        rule that removes nothing. A `version` newer than FORMAT_VERSION is a ValueError.
        """
        if data is None or data == "":
            return cls()
        obj = json.loads(data) if isinstance(data, str) else data
        if not isinstance(obj, Mapping):
            raise ValueError(f"a duplicate rule is a JSON object, not {type(obj).__name__}")
        version = obj.get("version")
        if version is not None and int(version) > FORMAT_VERSION:
            raise ValueError(
                f"duplicate rule format version {version} is newer than this code's "
                f"{FORMAT_VERSION}; upgrade image-curator to read it"
            )
        methods = obj.get("methods") or []
        if isinstance(methods, str):
            methods = [methods]
        eps = obj.get("eps")
        if not isinstance(methods, list | tuple) or not isinstance(eps, int | float | None):
            raise ValueError(f"not a duplicate rule: {dict(obj)!r}")
        return cls(
            exclude=bool(obj.get("exclude", True)),
            methods=tuple(str(m) for m in methods),
            eps=None if eps is None else float(eps),
        )
