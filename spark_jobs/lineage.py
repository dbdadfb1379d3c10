"""Lineage: what happened to every sample, and which rule decided it — the `fates` view.

`fates` is derived from the tables the jobs already write, never a second copy of their
logic: `images` and `quarantine` (ingest), `scores` (embed errors), `curated` and the rule its
filter run recorded (predicates, duplicate rule: the commit's userMetadata), `duplicates`
(dedup) and `exported` (export). One row per ingested sample and one per quarantined member:

| fate        | when                                                             | stage  |
| ----------- | ---------------------------------------------------------------- | ------ |
| quarantined | a quarantine row (ingest), or the embedder could not decode it   | ingest / embed |
| pending     | not scored yet, or scored after the last filter run              | embed / filter |
| filtered    | not in `curated` and a recorded predicate is false or NULL       | filter |
| duplicate   | not in `curated`, every predicate true: the duplicate rule took it | dedup |
| curated     | in `curated`, not exported from this version of it               | filter |
| exported    | in `curated` and in `exported` for this curated version           | export |

Membership in `curated` is the ground truth of what the filter kept; the predicates are
evaluated again only to name the ones that rejected a sample. With an `AsOf`, every table is
read as it was then (Delta time travel), and the rule is the one of that curated version.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from pyspark.sql import SparkSession

from spark_jobs.config import Config, filter_predicates
from spark_jobs.dup_rule import DuplicateRule
from spark_jobs.tables import (
    AsOf,
    commit_info,
    latest_version,
    read_table,
    sql_list,
    table_exists,
    table_path,
    table_ref,
)

FATES_VIEW = "fates"
FATES = ("quarantined", "pending", "filtered", "duplicate", "curated", "exported")
# Which duplicates row explains a removal when a sample has several: the cheapest method first.
_DUPLICATE_COLUMNS = (
    ("sample_id", "STRING"), ("duplicate_of", "STRING"), ("similar_to", "STRING"),
    ("similarity", "DOUBLE"), ("method", "STRING"), ("eps", "DOUBLE"), ("cluster", "STRING"),
    ("run_id", "STRING"),
)  # fmt: skip
_METHOD_ORDER = "CASE d.method WHEN 'exact' THEN 0 WHEN 'perceptual' THEN 1 ELSE 2 END"


@dataclass
class FilterRecord:
    """The rule a filter run applied: what it wrote into its curated commit's userMetadata."""

    version: int | None
    committed_ms: int | None
    run_id: str | None = None
    model: str | None = None
    predicates: list[str] = field(default_factory=list)
    dedup: DuplicateRule = field(default_factory=DuplicateRule)
    recorded: bool = False  # False: the commit carried no rule; the configuration's is shown
    names: dict[str, str] = field(default_factory=dict)  # predicate text → preset predicate name

    def label(self, predicate: str) -> str:
        """How the predicate is shown: `datacomp_basic.english: ...` for a preset's, else as is."""
        from curator_udfs.predicates import predicate_label

        return predicate_label(predicate, self.names.get(predicate))


def filter_record(spark: SparkSession, cfg: Config, as_of: AsOf | None = None) -> FilterRecord:
    """The rule behind `curated` (now, or at `as_of`); the configuration's when unrecorded."""
    from spark_jobs.views import scored_model_id

    path = table_path(cfg, "curated")
    version = None
    if table_exists(spark, cfg, "curated", as_of=as_of):
        version = as_of.version_at(spark, cfg, "curated") if as_of else latest_version(spark, path)
    info = commit_info(path, version) if version is not None and version >= 0 else None
    meta: dict[str, Any] = {}
    if info and info.get("userMetadata"):
        try:
            meta = json.loads(info["userMetadata"])
        except ValueError:
            meta = {}
    rule = None
    if meta.get("job") == "filter":
        try:  # parsed once here; costs, why and the fates view use the typed rule
            rule = DuplicateRule.from_json(meta.get("dedup"))
        except ValueError:  # unreadable: shown like an unrecorded rule, never a failure
            rule = None
    if rule is not None:
        names = meta.get("predicate_names")
        return FilterRecord(
            version,
            info.get("timestamp") if info else None,
            meta.get("run_id"),
            meta.get("model"),
            list(meta.get("predicates", [])),
            rule,
            recorded=True,
            names={str(k): str(v) for k, v in names.items()} if isinstance(names, dict) else {},
        )
    configured = filter_predicates(cfg)
    return FilterRecord(
        version,
        info.get("timestamp") if info else None,
        None,
        scored_model_id(cfg),
        [t for t, _ in configured],
        DuplicateRule.from_config(cfg),
        names={t: n for t, n in configured if n},
    )


def _ref(spark: SparkSession, cfg: Config, logical: str, as_of: AsOf | None) -> str | None:
    """How the view names a table, or None when it does not exist (at `as_of`)."""
    if not table_exists(spark, cfg, logical, as_of=as_of):
        return None
    return table_ref(cfg, logical, as_of, spark)


def fates_select(
    spark: SparkSession,
    cfg: Config,
    as_of: AsOf | None = None,
    record: FilterRecord | None = None,
) -> str | None:
    """The SELECT behind `fates` (see the module docstring), None while there is no `images`."""
    from spark_jobs.views import scored_select

    images = _ref(spark, cfg, "images", as_of)
    if images is None:
        return None
    rec = record or filter_record(spark, cfg, as_of)
    scored = scored_select(spark, cfg, as_of, model=rec.model)
    curated = _ref(spark, cfg, "curated", as_of) if rec.version is not None else None
    dups = _ref(spark, cfg, "duplicates", as_of)
    exported = _ref(spark, cfg, "exported", as_of)
    quarantine = _ref(spark, cfg, "quarantine", as_of)

    ctes = []
    if scored is not None:
        failed = ", ".join(
            f"IF(coalesce(({p}), false), NULL, {sql_list([rec.label(p)])})"
            for p in rec.predicates
        )
        failed_expr = f"filter(array({failed}), x -> x IS NOT NULL)" if failed else "array()"
        ctes.append(
            "sc AS (SELECT sample_id, score_error, scored_at, run_id_s, "
            f"CAST({failed_expr} AS ARRAY<STRING>) AS failed_predicates FROM "
            f"(SELECT x.*, s2.run_id AS run_id_s FROM ({scored}) x "
            f"JOIN {table_ref(cfg, 'scores', as_of, spark)} s2 "
            f"ON s2.sample_id = x.sample_id AND s2.model = {sql_list([rec.model or ''])}))"
        )
    else:
        ctes.append(
            "sc AS (SELECT CAST(NULL AS STRING) AS sample_id, CAST(NULL AS STRING) AS score_error,"
            " CAST(NULL AS TIMESTAMP) AS scored_at, CAST(NULL AS STRING) AS run_id_s,"
            " CAST(array() AS ARRAY<STRING>) AS failed_predicates WHERE false)"
        )
    if curated is not None:
        ctes.append(f"c AS (SELECT DISTINCT sample_id, run_id FROM {curated})")
    else:
        ctes.append("c AS (SELECT CAST(NULL AS STRING) AS sample_id, "
                    "CAST(NULL AS STRING) AS run_id WHERE false)")  # fmt: skip
    if dups is not None and rec.dedup.active:
        have = set(read_table(spark, cfg, "duplicates", as_of=as_of).columns)
        cols = ", ".join(  # tables written by older versions may lack a column
            c if c in have else f"CAST(NULL AS {t}) AS {c}" for c, t in _DUPLICATE_COLUMNS
        )
        ctes.append(
            "d AS (SELECT * FROM (SELECT d.*, row_number() OVER (PARTITION BY d.sample_id "
            f"ORDER BY {_METHOD_ORDER}, d.eps, d.duplicate_of) AS rn FROM "
            f"(SELECT {cols} FROM {dups}) d WHERE {rec.dedup.condition('d')}) WHERE rn = 1)"
        )
    else:
        ctes.append(
            "d AS (SELECT CAST(NULL AS STRING) AS sample_id, CAST(NULL AS STRING) AS duplicate_of,"
            " CAST(NULL AS STRING) AS similar_to, CAST(NULL AS DOUBLE) AS similarity,"
            " CAST(NULL AS STRING) AS method, CAST(NULL AS DOUBLE) AS eps,"
            " CAST(NULL AS STRING) AS cluster, CAST(NULL AS STRING) AS run_id WHERE false)"
        )
    if exported is not None and rec.version is not None:
        ctes.append(
            f"e AS (SELECT sample_id, shard, position, output, run_id FROM {exported} "
            f"WHERE curated_version = {int(rec.version)})"
        )
    else:
        ctes.append(
            "e AS (SELECT CAST(NULL AS STRING) AS sample_id, CAST(NULL AS STRING) AS shard,"
            " CAST(NULL AS INT) AS position, CAST(NULL AS STRING) AS output,"
            " CAST(NULL AS STRING) AS run_id WHERE false)"
        )
    filtered_at = (
        f"timestamp_millis({int(rec.committed_ms)})" if rec.committed_ms is not None else "NULL"
    )
    filter_run = sql_list([rec.run_id]) if rec.run_id else "c.run_id"
    has_filter = "true" if curated is not None else "false"
    # One state per sample, decided once (first match wins), then named four ways below.
    states = [
        ("not_embedded", "sc.sample_id IS NULL"),
        ("embed_error", "sc.score_error IS NOT NULL"),
        ("exported", "c.sample_id IS NOT NULL AND e.sample_id IS NOT NULL"),
        ("curated", "c.sample_id IS NOT NULL"),
        ("not_filtered", f"NOT {has_filter}"),
        ("scored_after", f"sc.scored_at > {filtered_at}"),
        ("filtered", "size(sc.failed_predicates) > 0"),
    ]  # else: duplicate
    # Named from the inner query's columns (see the FROM (...) below).
    duplicate_reason = (
        "IF(d_sample_id IS NULL, 'removed as a duplicate by the filter run (no longer listed "
        "in duplicates)', concat(duplicate_method, ' duplicate', IF(duplicate_method = "
        "'semantic', concat(' (eps ', CAST(duplicate_eps AS STRING), ')'), ''), ' of ', "
        "duplicate_of, ', similarity ', CAST(round(similarity, 4) AS STRING)))"
    )
    # state: (fate, stage, reason, decided_by)
    named = {
        "not_embedded": ("pending", "embed", "'not embedded yet'", "ingest_run"),
        "embed_error": ("quarantined", "embed", "concat('embed_error: ', score_error)",
                        "embed_run"),
        "exported": ("exported", "export",
                     "concat('exported to ', export_shard, ' position ', export_position)",
                     "export_run"),
        "curated": ("curated", "filter", "'kept; not exported from this curated version yet'",
                    "filter_run"),
        "not_filtered": ("pending", "filter", "'not filtered yet'", "embed_run"),
        "scored_after": ("pending", "filter", "'scored after the last filter run'", "embed_run"),
        "filtered": ("filtered", "filter",
                     "concat('failed: ', array_join(failed_predicates, ' ; '))", "filter_run"),
        "duplicate": ("duplicate", "dedup", duplicate_reason, "coalesce(dedup_run, filter_run)"),
    }  # fmt: skip
    state_case = (
        "CASE "
        + " ".join(f"WHEN {cond} THEN '{name}'" for name, cond in states)
        + " ELSE 'duplicate' END"
    )

    def by_state(i: int, quote: bool) -> str:
        whens = " ".join(
            f"WHEN '{state}' THEN " + (f"'{v[i]}'" if quote else v[i]) for state, v in named.items()
        )
        return f"CASE state {whens} END"

    sample_rows = f"""
SELECT sample_id, shard_uri, key, ordinal, {by_state(0, True)} AS fate,
  {by_state(1, True)} AS stage, {by_state(2, False)} AS reason, failed_predicates,
  duplicate_of, similar_to, similarity, duplicate_method, duplicate_eps, duplicate_cluster,
  export_shard, export_position, export_output, {by_state(3, False)} AS decided_by,
  ingest_run, dedup_run, filter_run, export_run
FROM (
SELECT i.sample_id, i.shard_uri, i.key, CAST(NULL AS BIGINT) AS ordinal, {state_case} AS state,
  sc.failed_predicates, sc.score_error, sc.run_id_s AS embed_run, d.sample_id AS d_sample_id,
  d.duplicate_of, d.similar_to, d.similarity, d.method AS duplicate_method,
  d.eps AS duplicate_eps, d.cluster AS duplicate_cluster, d.run_id AS dedup_run,
  e.shard AS export_shard, e.position AS export_position, e.output AS export_output,
  e.run_id AS export_run, i.run_id AS ingest_run,
  {filter_run if curated is not None else "CAST(NULL AS STRING)"} AS filter_run
FROM {images} i
LEFT JOIN sc ON sc.sample_id = i.sample_id
LEFT JOIN c ON c.sample_id = i.sample_id
LEFT JOIN d ON d.sample_id = i.sample_id
LEFT JOIN e ON e.sample_id = i.sample_id)"""
    quarantine_rows = ""
    if quarantine is not None:
        quarantine_rows = f"""
UNION ALL
SELECT IF(q.key IS NULL, NULL, substr(sha2(concat(q.shard_uri, char(0), q.key), 256), 1, 24)),
  q.shard_uri, q.key, q.ordinal, 'quarantined', 'ingest',
  concat(q.reason, IF(q.detail IS NULL OR q.detail = '', '', concat(': ', q.detail))),
  CAST(NULL AS ARRAY<STRING>), NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  q.run_id, q.run_id, NULL, NULL, NULL
FROM {quarantine} q"""
    return "WITH " + ",\n".join(ctes) + sample_rows + quarantine_rows
