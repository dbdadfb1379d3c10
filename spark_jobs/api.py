"""Python API for notebooks: the curation pipeline as a chain of calls on a `Dataset`.

```python
ds = Dataset.from_shards(spark, "shards/", cfg=cfg)      # ingest into the warehouse, the images
ds = TimmImageEmbedder("test_vit", pretrained=False)(ds)   # + embedding, error
ds = AestheticClassifier(input_dim=1000).load_weights(w)(ds)   # + aesthetic_score
ds = ds.filter("aesthetic_score >= 5 AND width >= 64")
ds = SemanticDeduplicator(eps=0.01, keep="aesthetic")(ds)
ds.to_webdataset("out/")
```

A `Dataset` is a Spark DataFrame (`ds.df`) with the warehouse config it belongs to and what is
known about its columns (which model made the embedding, which head columns it has). Every
step is the jobs' own code on a frame instead of a table: ingest is `spark_jobs.ingest.run`,
embedding and heads are the executor-side batch functions of the embed and classify jobs
(`spark_jobs.dataset_ops`), predicates are validated like `filter.predicates`, semantic dedup
is `spark_jobs.dedup_semantic.semantic_pairs` + `semantic_rows`, export is
`spark_jobs.export.export_frame`.

Embedding runs eagerly and caches its result (Spark MEMORY_AND_DISK), so later steps do not run
the model again; the other steps are lazy Spark plans. Only these calls write to the warehouse:
`from_shards` (the ingest), `persist_scores`, `persist_duplicates`, `save_as`, and
`to_webdataset` (which records positions in `exported` only for a Dataset saved as `curated`,
the table that `exported` describes).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from pydantic import ValidationError
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from curator_udfs import classifiers as heads
from curator_udfs import embedders
from curator_udfs.classifiers import ClassifierHead
from curator_udfs.embedders import ImageEmbedder
from spark_jobs.config import DedupCfg, format_validation_error
from spark_jobs.dataset import Dataset, session
from spark_jobs.dataset_ops import embed_dataframe, score_dataframe, spec_for
from spark_jobs.summary import Summary, new_run_id
from spark_jobs.views import head_column

__all__ = [
    "AestheticClassifier",
    "ClassifierHead",
    "Dataset",
    "ImageEmbedder",
    "NsfwClassifier",
    "SemanticDeduplicator",
    "TimmImageEmbedder",
    "apply_embedder",
    "apply_head",
    "session",
]


def apply_embedder(
    embedder: ImageEmbedder,
    data: Dataset | DataFrame,
    *,
    heads: Sequence[Any] = (),
    image_col: str = "image",
) -> Dataset | DataFrame:
    """Any embedder (yours too) over a Dataset (`Dataset.embed`) or a DataFrame (the same rows
    plus `embedding`, head scores and `error`, computed on the executors)."""
    if isinstance(data, Dataset):
        return data.embed(embedder, heads=heads, image_col=image_col)
    return embed_dataframe(data, spec_for(embedder, heads), image_col=image_col)


def apply_head(
    head: ClassifierHead, data: Dataset | DataFrame, *, embedding_col: str = "embedding"
) -> Dataset | DataFrame:
    """Any loaded head over a Dataset (`Dataset.score`) or a DataFrame with embeddings."""
    if isinstance(data, Dataset):
        return data.score(head)
    return score_dataframe(data, spec_for(None, [head]), embedding_col=embedding_col)


class TimmImageEmbedder(embedders.TimmImageEmbedder):
    """The executor-side timm embedder, callable on a Dataset or DataFrame: `E(...)(ds)`."""

    executor_class: ClassVar[type] = embedders.TimmImageEmbedder

    def __call__(
        self, data: Dataset | DataFrame, *, heads: Sequence[Any] = (), image_col: str = "image"
    ) -> Dataset | DataFrame:
        return apply_embedder(self, data, heads=heads, image_col=image_col)


class _ApiHead:
    """Mixin: `head(ds)` / `head(df)` scores on the executors; `head(tensor)` is the forward."""

    def __call__(self, data: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(data, (Dataset, DataFrame)):
            return apply_head(self, data, **kwargs)  # type: ignore[arg-type]
        return super().__call__(data, *args, **kwargs)  # type: ignore[misc]


class AestheticClassifier(_ApiHead, heads.AestheticClassifier):
    """The LAION aesthetic head, callable on a Dataset or DataFrame."""

    executor_class: ClassVar[type] = heads.AestheticClassifier


class NsfwClassifier(_ApiHead, heads.NsfwClassifier):
    """The LAION NSFW head, callable on a Dataset or DataFrame."""

    executor_class: ClassVar[type] = heads.NsfwClassifier


class SemanticDeduplicator:
    """Remove semantic near-duplicates from a Dataset with the dedup job's algorithm.

    `eps`: pairs with cosine similarity >= 1 - eps are duplicates; `keep`: which sample of a
    group stays (aesthetic | resolution | farthest_from_centroid); `options`: any other
    `dedup.*` key (seed, coarse_k, sample_size, second_margin, max_cluster_size, block_size,
    backend). The dedup is over the Dataset's own rows, so on the same rows
    and config it removes what `curator dedup` + `curator filter` remove.
    """

    def __init__(self, eps: float = 0.01, keep: str = "aesthetic", **options: Any) -> None:
        allowed = set(DedupCfg.model_fields) - {"methods", "eps", "keep", "write_pairs"}
        bad = set(options) - allowed
        if bad:
            raise ValueError(
                f"SemanticDeduplicator: unknown option(s) {sorted(bad)}; allowed: eps, keep, "
                f"{', '.join(sorted(allowed))}"
            )
        self.eps = float(eps)
        self.keep = keep
        self.options = options
        self.last_summary: Summary | None = None
        self._dedup_cfg(DedupCfg())  # fail now on bad values, not after the model ran

    def _dedup_cfg(self, base: DedupCfg) -> DedupCfg:
        tree = {**base.model_dump(), **self.options}
        tree.update(methods=["semantic"], eps=[self.eps], keep=self.keep)
        try:
            return DedupCfg.model_validate(tree)
        except ValidationError as exc:
            raise ValueError("SemanticDeduplicator:\n" + format_validation_error(exc)) from None

    def __call__(self, ds: Dataset) -> Dataset:
        """`ds` without its semantic duplicates; the removed rows are in `.duplicates`."""
        from spark_jobs.dedup_semantic import semantic_pairs, semantic_rows
        from spark_jobs.tables import DUPLICATES, conform

        if not isinstance(ds, Dataset):
            raise TypeError(f"SemanticDeduplicator takes a Dataset, got {type(ds).__name__}")
        if "embedding" not in ds.df.columns:
            raise ValueError(
                "SemanticDeduplicator: the Dataset has no embedding column; embed first: "
                "ds = TimmImageEmbedder(...)(ds), or Dataset.from_tables(spark, cfg)"
            )
        column = head_column(ds.cfg, "aesthetic", "aesthetic_score")
        if self.keep == "aesthetic" and column not in ds.df.columns:
            raise ValueError(
                f"SemanticDeduplicator(keep='aesthetic'): the Dataset has no {column}; "
                "apply AestheticClassifier first, or use keep='resolution'"
            )
        cfg = ds.cfg.model_copy(update={"dedup": self._dedup_cfg(ds.cfg.dedup)})
        df = ds.df
        usable = F.col("embedding").isNotNull()
        if "error" in df.columns:
            usable = usable & F.col("error").isNull()
        emb = df.where(usable).select("sample_id", "embedding")
        aesthetic = (
            F.col(column).cast("double")
            if column in df.columns
            else F.lit(None).cast("double")
        )
        ranked = df.select(
            "sample_id",
            "width",
            "height",
            (F.col("width").cast("double") * F.col("height").cast("double")).alias("pixels"),
            aesthetic.alias("aesthetic_score"),
        )
        summary = Summary(job="semantic_dedup", run_id=new_run_id("api"), unit="samples")
        sp = semantic_pairs(ds.spark, cfg, emb, ranked, summary)
        removed: dict[str, int] = {}
        try:
            rows = semantic_rows(sp, ranked, cfg, summary, removed)  # checkpointed
            n_pairs, n_rows = sp.all_pairs().count(), rows.count()
        finally:
            sp.unpersist()
        dups = conform(rows.withColumn("run_id", F.lit(summary.run_id)), DUPLICATES)
        kept = df.join(dups.select("sample_id"), "sample_id", "left_anti")
        summary.rows_in = int(summary.extra.get("embeddings", 0))
        summary.skipped = n_rows
        summary.rows_written = summary.rows_in - summary.skipped
        summary.extra.update(pairs=n_pairs, removed=removed)
        self.last_summary = summary.finish()
        return ds._with(kept, duplicates=dups, dedup_eps=self.eps)
