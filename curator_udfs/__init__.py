"""Per-batch logic the Spark jobs ship to executors; importable without a SparkSession.

Public names are re-exported lazily (PEP 562), so `import curator_udfs.shard_reader` on an
executor does not pay for torch or timm. Importing the package makes zip archives on
``sys.path`` re-read only when they change (:mod:`.zip_imports`: on Python < 3.12 PySpark's
per-task ``importlib.invalidate_caches()`` otherwise re-reads pyspark.zip and the spark-core jar
once per imported package, every task).
"""

from __future__ import annotations

import importlib
from typing import Any

from .zip_imports import reread_zips_only_when_changed

reread_zips_only_when_changed()

_EXPORTS: dict[str, str] = {
    # ingest
    "normalize_shard_uri": "ids",
    "sample_id": "ids",
    "ShardFile": "shard_listing",
    "list_shards": "shard_listing",
    "IMAGE_EXTENSIONS": "image_probe",
    "ImageInfo": "image_probe",
    "ImageRejected": "image_probe",
    "probe_image": "image_probe",
    "IngestLimits": "shard_reader",
    "IngestedSample": "shard_reader",
    "QuarantinedItem": "shard_reader",
    "ShardOutcome": "shard_reader",
    "ShardReader": "shard_reader",
    "SampleShardsReport": "sample_shards",
    "write_sample_shards": "sample_shards",
    # embed and classify
    "choose_device": "device",
    "current_device": "device",
    "decode_rgb": "decode",
    "WeightsError": "weights",
    "load_state_dict": "weights",
    "ImageEmbedder": "embedders",
    "TimmImageEmbedder": "embedders",
    "DEFAULT_MODEL": "specs",
    "ClassifierHead": "classifiers",
    "AestheticClassifier": "classifiers",
    "NsfwClassifier": "classifiers",
    "register_head": "classifiers",
    "build_head": "classifiers",
    "EmbedSpec": "specs",
    "HeadSpec": "specs",
    "make_embed_fn": "embed_batches",
    "make_classify_fn": "embed_batches",
    # dedup
    "KMeansBackend": "kmeans",
    "select_backend": "kmeans",
    "assign": "kmeans",
    "pairs_above": "similarity",
    "fine_cluster_pairs": "semantic",
    "resolve_duplicates": "resolve",
    "phash64": "phash",
    "hamming": "phash",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'curator_udfs' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"curator_udfs.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
