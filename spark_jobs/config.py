"""The pipeline configuration: one validated schema, loaded from YAML plus `--set` overlays.

Every error names the key and what would fix it, and is raised before Spark starts.
"""

from __future__ import annotations

import dataclasses
import difflib
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from curator_udfs.presets import NamedPredicate, PresetThresholds, expand_presets, preset_names
from curator_udfs.shard_reader import IngestLimits
from curator_udfs.specs import DecodeMode, EmbedSpec, HeadSpec
from spark_jobs.config_keys import dotted_key, field_help, known_keys
from spark_jobs.paths import StoreURI, is_uri, resolve_config_path
from spark_jobs.redact import MASK, is_secret_key, redact, remember_secrets, secret_values


class ConfigError(Exception):
    """A configuration the user must fix; the message names the key and the fix."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SparkCfg(_Section):
    profile: str = Field(
        default="local",
        description="a file name in conf/spark/ (local, gpu-cluster) or a path to a .conf file",
    )
    conf: dict[str, str | int | float | bool] = Field(
        default_factory=dict, description="Spark settings that override the profile"
    )
    with_rapids_jar: bool = Field(
        default=False, description="put the RAPIDS jar on the classpath (explain-only reports)"
    )
    with_object_store_jars: bool = Field(
        default=False,
        description="put hadoop-aws and the AWS SDK on the classpath even when the warehouse is "
        "local (they are added by themselves for an s3:// or s3a:// warehouse)",
    )


class InputCfg(_Section):
    shards: list[str] = Field(
        default_factory=lambda: ["./shards"],
        description="directories, globs or URIs of WebDataset tar shards",
    )


class IngestCfg(_Section):
    max_image_pixels: int = Field(
        default=89_478_485, gt=0, description="images with more pixels are quarantined (bombs)"
    )
    max_image_bytes: int = Field(
        default=50_000_000, gt=0, description="image members larger than this are quarantined"
    )
    max_caption_bytes: int = Field(
        default=1_000_000, gt=0, description="longer captions are truncated, with a warning"
    )
    max_json_bytes: int = Field(
        default=1_000_000, gt=0, description="larger JSON members are dropped, with a warning"
    )
    shards_per_batch: int = Field(
        default=64, gt=0, description="shards committed together in one Delta transaction per table"
    )
    retry_failed: bool = Field(
        default=False, description="re-read shards recorded as failed (e.g. after fixing a file)"
    )
    row_group_bytes: int = Field(
        default=8 * 1024 * 1024,
        ge=64 * 1024,
        description="Parquet row groups of the images files: Spark splits a file only between "
        "them, so smaller groups let embed and dedup read one new shard in several tasks",
    )
    bytes: Literal["copy", "reference"] = Field(
        default="copy",
        description="copy: `images` holds the bytes; reference: byte ranges of the (unchanged, "
        "unmoved) shards, read back by each stage (.tar.gz shards are copied)",
    )


class HeadCfg(_Section):
    name: str = Field(description="aesthetic, nsfw, or the name of your own head")
    weights: str | None = Field(
        default=None, description="local file or directory; null = HF hub or cache"
    )
    class_path: str | None = Field(
        default=None, description="'package.module:ClassName' of a ClassifierHead subclass"
    )
    output_column: str | None = Field(
        default=None, description="score column name; default from the head"
    )
    random_init: bool = Field(
        default=False, description="random weights (tests and demos with tiny models only)"
    )


class EmbedCfg(_Section):
    model: str = Field(
        default="vit_large_patch14_clip_quickgelu_224.openai",
        description="a timm model name, or open_clip:ARCH, open_clip:ARCH/TAG for an open_clip "
        "CLIP model (image and text towers; TAG = an open_clip pretrained tag)",
    )
    pretrained: bool = Field(
        default=True, description="false = random init (tests, demos with tiny models)"
    )
    weights: str | None = Field(
        default=None, description="local weights file or directory instead of the hub"
    )
    batch_size: int = Field(default=256, gt=0, description="images per forward pass")
    num_threads_per_worker: int = Field(
        default=4, gt=0, description="decode threads per Python worker on a GPU (CPU: inline)"
    )
    autocast: bool = Field(default=True, description="fp16 autocast on CUDA")
    decode: DecodeMode = Field(default="auto", description="auto: nvJPEG on CUDA; pil: all PIL")
    normalize: bool = Field(
        default=True, description="L2-normalise embeddings (the heads expect it)"
    )
    signals: bool = Field(
        default=True, description="sharpness, colorfulness, grayscale in the pass (false: NULL)"
    )
    arrow_batch_size: int = Field(default=256, gt=0, description="rows per Arrow batch to the UDF")
    broadcast_ids: int = Field(
        default=20_000_000,
        gt=0,
        description="most pending sample_ids broadcast to select the images to embed (no "
        "shuffle of the bytes); more are embedded in batches of whole shards, one write each",
    )
    embedder_class: str | None = Field(
        default=None, description="'package.module:ClassName' of an ImageEmbedder subclass"
    )
    text: bool | None = Field(
        default=None,
        description="clip_score (image-caption cosine) from the model's text tower: true, "
        "false, or null = when the model has one (open_clip models)",
    )


class FilterCfg(_Section):
    predicates: list[str] = Field(
        default_factory=lambda: ["aesthetic_score >= 5", "nsfw_score < 0.2"],
        description="SQL boolean expressions over the scored view, ANDed",
    )
    exclude_duplicates: bool = Field(
        default=True,
        description="leave out samples listed in the duplicates table (when it exists)",
    )
    dedup_eps: float | None = Field(
        default=None,
        ge=0.0,
        lt=1.0,
        description="which semantic-dedup eps decides duplicates when the duplicates table has "
        "several; null = the first of dedup.eps",
    )
    presets: list[str] = Field(
        default_factory=list,
        description="named predicate sets ANDed with `predicates`: " + ", ".join(preset_names()),
    )
    clip_score_min: float = Field(
        default=0.28, ge=-1.0, le=1.0, description="clip_score_laion: clip_score >= this"
    )
    min_side: int = Field(
        default=200, ge=0, description="datacomp_basic: width and height >= this (pixels)"
    )
    max_aspect_ratio: float = Field(
        default=3.0, ge=1.0, description="datacomp_basic: aspect_ratio (long/short side) <= this"
    )
    min_caption_words: int = Field(
        default=3, ge=0, description="datacomp_basic: caption_words >= this"
    )
    min_caption_chars: int = Field(
        default=6, ge=0, description="datacomp_basic: caption_chars >= this"
    )
    caption_language: str = Field(
        default="en",
        pattern=r"^[a-z]{2,3}$",
        description="datacomp_basic: caption_language = this (a lowercase ISO 639 code)",
    )

    @field_validator("presets")
    @classmethod
    def _known_presets(cls, v: list[str]) -> list[str]:
        unknown = [p for p in v if p not in preset_names()]
        if unknown:
            raise ValueError(
                f"unknown preset(s) {', '.join(map(repr, unknown))}; the known presets are "
                + ", ".join(preset_names())
            )
        return v


def _all_dedup_methods() -> list[Literal["exact", "perceptual", "semantic"]]:
    return ["exact", "perceptual", "semantic"]


class DedupCfg(_Section):
    methods: list[Literal["exact", "perceptual", "semantic"]] = Field(
        default_factory=_all_dedup_methods,
        description="any of exact, perceptual, semantic",
    )
    eps: list[float] = Field(
        default_factory=lambda: [0.01], description="semantic: pairs with similarity >= 1 - eps"
    )
    keep: Literal["aesthetic", "resolution", "farthest_from_centroid"] = Field(
        default="aesthetic", description="which sample of a duplicate group is kept"
    )
    seed: int = Field(default=0, description="seed of the coarse sample and every k-means fit")
    backend: Literal["auto", "cuml", "faiss", "sklearn"] = Field(
        default="auto", description="k-means backend: auto = cuML on a visible GPU, else faiss"
    )
    coarse_k: int | None = Field(
        default=None,
        gt=0,
        description="coarse k-means clusters; null = number of embeddings // 5000",
    )
    sample_size: int = Field(
        default=50_000,
        gt=0,
        description="embeddings sampled to the driver to fit the coarse k-means",
    )
    second_margin: float | None = Field(
        default=0.02,
        ge=0.0,
        description="also assign a row to each next-nearest coarse centroid whose cosine is "
        "within this of the nearest's (recall at cluster borders); null = nearest only",
    )
    coarse_assignments: int = Field(
        default=4, ge=1, le=8, description="coarse centroids a row joins at most (nearest first)"
    )
    max_cluster_size: int = Field(
        default=2000, ge=2, description="fine k-means splits each coarse group below this many rows"
    )
    fine_margin: float | None = Field(
        default=0.02,
        ge=0.0,
        description="also put a row into its second-nearest fine cluster when the cosine "
        "margin is below this (recall at fine-cluster borders); null = nearest only",
    )
    fine_resplits: int = Field(
        default=1, ge=0, le=8, description="extra seeded fine splits of a coarse group whose "
        "split hit the fine_margin overlap cap (recall in dense groups); 0 = none",
    )  # fmt: skip
    block_size: int = Field(
        default=4096,
        gt=0,
        description="rows per tile of the blocked similarity join (memory bound)",
    )
    phash_max_distance: int = Field(
        default=8, ge=0, le=63, description="perceptual: Hamming distance bound of 64-bit pHashes"
    )
    phash_bands: int | None = Field(
        default=None,
        ge=1,
        le=64,
        description="perceptual: bands of the hash joined on; null = phash_max_distance + 1 "
        "(finds every pair within the bound); fewer, wider bands = fewer candidates at scale",
    )
    write_pairs: bool = Field(
        default=False, description="also write the duplicate_pairs table (every pair, for checks)"
    )

    @field_validator("eps")
    @classmethod
    def _eps_range(cls, v: list[float]) -> list[float]:
        bad = [e for e in v if not 0.0 <= e < 1.0]
        if bad or not v:
            raise ValueError(f"each eps must be in [0, 1) and the list non-empty, got {v}")
        return v


class ExportCfg(_Section):
    output: str = Field(default="./curated", description="directory of the curated shards")
    samples_per_shard: int = Field(default=10_000, gt=0, description="target samples per shard")
    max_shard_bytes: int | None = Field(
        default=None,
        gt=0,
        description="target bytes per output shard (null = by sample count only)",
    )
    tasks: int | None = Field(
        default=None,
        gt=0,
        description="Spark tasks writing shards, each a contiguous shard range "
        "(null = spark.default.parallelism)",
    )


_TABLE_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"


class TablesCfg(_Section):
    """The name of each table in the database (spark_jobs/tables.py declares them)."""

    shards: str = Field(default="shards", pattern=_TABLE_NAME)
    images: str = Field(default="images", pattern=_TABLE_NAME)
    quarantine: str = Field(default="quarantine", pattern=_TABLE_NAME)
    scores: str = Field(default="scores", pattern=_TABLE_NAME)
    phashes: str = Field(default="phashes", pattern=_TABLE_NAME)
    duplicates: str = Field(default="duplicates", pattern=_TABLE_NAME)
    duplicate_pairs: str = Field(default="duplicate_pairs", pattern=_TABLE_NAME)
    curated: str = Field(default="curated", pattern=_TABLE_NAME)
    filter_stats: str = Field(default="filter_stats", pattern=_TABLE_NAME)
    exported: str = Field(default="exported", pattern=_TABLE_NAME)
    dedup_centroids: str = Field(default="dedup_centroids", pattern=_TABLE_NAME)
    dedup_members: str = Field(default="dedup_members", pattern=_TABLE_NAME)
    dedup_group_pairs: str = Field(default="dedup_group_pairs", pattern=_TABLE_NAME)


class Config(_Section):
    warehouse: str = Field(
        default="./warehouse", description="where the Delta tables and the catalog live"
    )
    database: str = Field(
        default="curator",
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$",
        description="a schema name (`curator`) or a Unity Catalog `catalog.schema`; tables are "
        "database.images, ...",
    )
    spark: SparkCfg = Field(default_factory=SparkCfg)
    input: InputCfg = Field(default_factory=InputCfg)
    ingest: IngestCfg = Field(default_factory=IngestCfg)
    embed: EmbedCfg = Field(default_factory=EmbedCfg)
    classifiers: list[HeadCfg] = Field(
        default_factory=lambda: [HeadCfg(name="aesthetic"), HeadCfg(name="nsfw")],
        description="heads run right after the embedding, on the same device",
    )
    filter: FilterCfg = Field(default_factory=FilterCfg)
    dedup: DedupCfg = Field(default_factory=DedupCfg)
    export: ExportCfg = Field(default_factory=ExportCfg)
    tables: TablesCfg = Field(default_factory=TablesCfg)

    @property
    def warehouse_path(self) -> Path | StoreURI:
        """The warehouse: an absolute local path, or an object-store URI (`s3a://bucket/wh`)."""
        w = self.warehouse.removeprefix("file://")
        if is_uri(w):
            return StoreURI(w)
        return Path(w).expanduser().resolve()


# Free-form mappings whose own keys contain dots (`--set spark.conf.spark.sql.x=1`).
_DOTTED_MAPS = (("spark", "conf"),)


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    for prefix in _DOTTED_MAPS:
        if tuple(parts[: len(prefix)]) == prefix and len(parts) > len(prefix) + 1:
            parts = [*prefix, ".".join(parts[len(prefix) :])]
    node: Any = tree
    for i, part in enumerate(parts[:-1]):
        nxt = node.get(part) if isinstance(node, dict) else None
        if nxt is None:
            nxt = node[part] = {}
        if not isinstance(nxt, dict):
            where = ".".join(parts[: i + 1])
            raise ConfigError(
                f"--set {dotted}: `{where}` is not a section, so it has no key `{parts[i + 1]}`"
            )
        node = nxt
    node[parts[-1]] = value


def parse_set(item: str) -> tuple[str, Any]:
    """Split one `--set dotted.key=value`; the value is read as YAML (`[a, b]`, `true`, `3`)."""
    if "=" not in item:
        raise ConfigError(
            f"--set {item!r}: expected dotted.key=value, e.g. --set embed.batch_size=64"
        )
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key or any(not p for p in key.split(".")):
        raise ConfigError(f"--set {item!r}: the key is empty; expected dotted.key=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        shown = MASK if is_secret_key(key) else repr(raw)
        raise ConfigError(
            f"--set {key}: the value {shown} is not valid YAML ({exc.__class__.__name__}); quote it"
        ) from None
    return key, value


# Keys that existed once: their own message instead of "unknown key".
_REMOVED_KEYS = {
    "dedup.max_driver_pairs": "it is gone because resolution now runs in Spark (no pair goes "
    "to the driver, so there is no bound to set); delete the key",
}


def format_validation_error(exc: ValidationError) -> str:
    """One line per problem: the key, what is wrong, and what would fix it."""
    lines = []
    known = known_keys(Config)
    for err in exc.errors():
        key = dotted_key(tuple(err["loc"]))
        if err["type"] == "extra_forbidden" and key in _REMOVED_KEYS:
            lines.append(f"config key `{key}`: {_REMOVED_KEYS[key]}")
            continue
        if err["type"] == "extra_forbidden":
            close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
            hint = (
                f"did you mean `{close[0]}`?"
                if close
                else "remove it (see conf/curation.yaml for the keys)"
            )
            lines.append(f"config key `{key}`: unknown key; {hint}")
            continue
        got = err.get("input")
        got_s = repr(got) if not isinstance(got, dict) else "a mapping"
        if any(is_secret_key(str(part)) for part in err["loc"]):
            got_s = MASK  # pydantic echoes the input: never a credential
        help_ = field_help(Config, tuple(err["loc"]))
        fix = f"; expected {help_}" if help_ else ""
        lines.append(f"config key `{key}`: {err['msg']} (got {got_s}){fix}")
    return "\n".join(lines)


def load_config(
    path: str | Path | None = None, sets: list[str] | None = None, warehouse: str | None = None
) -> Config:
    """Embedded defaults, then the YAML file, then each `--set`, then `--warehouse`."""
    tree: dict[str, Any] = {}
    if path is not None:
        p = resolve_config_path(path)  # else the packaged conf/ (a wheel on a cluster)
        if not p.is_file():
            raise ConfigError(
                f"--config {path}: no such file; pass a YAML file such as conf/curation.yaml"
            )
        try:
            loaded = yaml.safe_load(p.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise ConfigError(f"--config {path}: not valid YAML: {exc}") from exc
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(
                f"--config {path}: the top level must be a mapping (warehouse:, embed:, ...)"
            )
        tree = loaded or {}
    for item in sets or []:
        key, value = parse_set(item)
        _set_dotted(tree, key, value)
    if warehouse is not None:
        tree["warehouse"] = warehouse
    try:
        cfg = Config.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(redact(format_validation_error(exc))) from None
    remember_secrets(secret_values(cfg.spark.conf))  # masked in any later redact(text)
    return cfg


# ---- config → executor specs (the only place where config fields become spec fields) ----------
_S = TypeVar("_S")


def _spec(cls: type[_S], section: BaseModel, **extra: Any) -> _S:
    """`cls` (a frozen dataclass) from the config section's fields of the same names: a spec
    field is a config key under its own name, never renamed on the way down."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    values = {k: getattr(section, k) for k in type(section).model_fields if k in names}
    return cls(**values, **extra)


def ingest_limits(cfg: Config) -> IngestLimits:
    """The size caps ingest tasks apply to untrusted input (`ingest.*`)."""
    return _spec(IngestLimits, cfg.ingest)


def embed_spec(cfg: Config) -> EmbedSpec:
    """What executors need from `embed.*` and `classifiers` (nothing is loaded or checked)."""
    heads = tuple(_spec(HeadSpec, h) for h in cfg.classifiers)
    return _spec(EmbedSpec, cfg.embed, heads=heads)


def preset_thresholds(cfg: Config) -> PresetThresholds:
    """The thresholds presets compare against (`filter.clip_score_min`, `filter.min_side`, ...)."""
    return _spec(PresetThresholds, cfg.filter)


def preset_predicates(cfg: Config) -> list[NamedPredicate]:
    """`filter.presets` expanded into named predicates (`datacomp_basic.english`, ...)."""
    return expand_presets(cfg.filter.presets, preset_thresholds(cfg))


def filter_predicates(cfg: Config) -> list[tuple[str, str | None]]:
    """Every predicate the filter applies, as (SQL text, preset predicate name or None):
    `filter.predicates` first, then the presets' (one already written by hand is kept once)."""
    out: list[tuple[str, str | None]] = [(p.strip(), None) for p in cfg.filter.predicates]
    seen = {" ".join(t.split()).lower() for t, _ in out}
    for p in preset_predicates(cfg):
        if " ".join(p.text.split()).lower() not in seen:
            out.append((p.text, p.name))
    return out
