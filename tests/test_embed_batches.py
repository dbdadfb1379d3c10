"""make_embed_fn / make_classify_fn on pandas frames, as mapInPandas calls them."""

from __future__ import annotations

import io
import pickle
from collections.abc import Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from PIL import Image

from curator_udfs import model_cache
from curator_udfs.embed_batches import (
    _Embedded,
    classify_output_schema,
    embed_arrow_schema,
    embed_output_schema,
    make_classify_fn,
    make_embed_arrow_fn,
    make_embed_fn,
)
from curator_udfs.model_ids import model_id as spec_model_id
from curator_udfs.specs import EmbedSpec, HeadSpec, head_columns
from tests.conftest import shared_models_dir

MODELS = shared_models_dir()
RANDOM_HEADS = (
    HeadSpec("aesthetic", random_init=True),
    HeadSpec("nsfw", random_init=True),
)


@pytest.fixture(autouse=True)
def fresh_cache() -> Iterator[None]:
    model_cache.clear_cache()
    yield
    model_cache.clear_cache()


def png(color: tuple[int, int, int], size: tuple[int, int] = (40, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "PNG")
    return buf.getvalue()


def images_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "sample_id": ["s1", "s2", "s3", "s4"],
            "image": [png((255, 0, 0)), b"not an image", None, png((0, 0, 255), (300, 200))],
        }
    )


def tiny_spec(**overrides: object) -> EmbedSpec:
    base: dict[str, object] = {
        "model": "test_vit",
        "pretrained": False,
        "batch_size": 2,
        "num_threads_per_worker": 2,
        "heads": RANDOM_HEADS,
    }
    base.update(overrides)
    return EmbedSpec(**base)  # type: ignore[arg-type]


def test_embed_fn_output_frame() -> None:
    spec = tiny_spec()
    out = list(make_embed_fn(spec)(iter([images_frame(), images_frame().iloc[:0]])))
    assert len(out) == 2
    frame, empty = out
    signals = ["clip_score", "sharpness", "colorfulness", "grayscale"]
    columns = ["sample_id", "embedding", "aesthetic_score", "nsfw_score", *signals, "error"]
    assert list(frame.columns) == columns
    assert list(empty.columns) == list(frame.columns) and len(empty) == 0
    assert frame["sample_id"].tolist() == ["s1", "s2", "s3", "s4"]
    ok = frame["error"].isna().to_numpy()
    assert ok.tolist() == [True, False, False, True]
    assert frame.loc[1, "error"].startswith("decode:")
    for emb in frame.loc[ok, "embedding"]:
        assert emb.dtype == np.float32 and emb.shape == (1000,)
        assert abs(float(np.linalg.norm(emb)) - 1.0) < 1e-3
    assert frame.loc[~ok, "embedding"].isna().all()
    assert np.isfinite(frame.loc[ok, "aesthetic_score"]).all()
    assert frame.loc[~ok, ["aesthetic_score", "nsfw_score"]].isna().all().all()
    assert frame["nsfw_score"].dtype == np.float64
    # Signals: values for decoded images (a flat red PNG: not sharp, colourful, not gray),
    # NULL (not NaN) for failed ones; clip_score NULL throughout (test_vit has no text tower).
    assert frame["clip_score"].isna().all()
    assert frame.loc[ok, "sharpness"].tolist() == [0.0, 0.0]
    assert frame.loc[0, "colorfulness"] > 80 and not frame.loc[0, "grayscale"]
    assert frame.loc[~ok, signals].isna().all().all()
    # Arrow (what mapInPandas does with the frame) accepts it as the declared schema.
    table = pa.Table.from_pandas(frame, preserve_index=False)
    assert pa.types.is_list(table.schema.field("embedding").type)
    assert embed_output_schema(spec) == (
        "sample_id string, embedding array<float>, aesthetic_score double, nsfw_score double, "
        "clip_score double, sharpness double, colorfulness double, grayscale boolean, error string"
    )
    assert pa.types.is_boolean(table.schema.field("grayscale").type)
    assert table.column("sharpness").null_count == 2


def test_arrow_fn_gives_the_pandas_fns_rows_as_arrow() -> None:
    """mapInArrow's batch function: the same rows, NULL embeddings where decoding failed, and
    exactly the declared schema (Spark reads the batches by position and type)."""
    spec = tiny_spec()
    frames = [images_frame(), images_frame().iloc[:0]]
    want = list(make_embed_fn(spec)(iter(frames)))
    batches = [pa.RecordBatch.from_pandas(f, preserve_index=False) for f in frames]
    got = list(make_embed_arrow_fn(spec)(iter(batches)))
    schema = embed_arrow_schema(spec)
    assert len(got) == 2 and all(b.schema.equals(schema) for b in got)
    assert got[1].num_rows == 0
    assert schema.names == [c.split(" ")[0] for c in embed_output_schema(spec).split(", ")]
    table, frame = got[0], want[0]
    assert table.column("sample_id").to_pylist() == frame["sample_id"].tolist()
    assert table.column("embedding").null_count == 2
    vectors = table.column("embedding").to_pylist()
    for vector, expected in zip(vectors, frame["embedding"], strict=True):
        if expected is None:
            assert vector is None
        else:
            np.testing.assert_array_equal(np.asarray(vector, dtype=np.float32), expected)
    for name in ("aesthetic_score", "nsfw_score", "sharpness", "colorfulness", "grayscale"):
        assert table.column(name).to_pylist() == pa.array(frame[name], from_pandas=True).to_pylist()
    assert table.column("error").to_pylist() == frame["error"].tolist()


def test_arrow_batches_split_where_int32_offsets_would_overflow(monkeypatch) -> None:
    from curator_udfs import embed_batches

    monkeypatch.setattr(embed_batches, "_MAX_LIST_VALUES", 10)  # 2 rows of 4 floats a batch
    columns = pd.DataFrame({"sample_id": list("abcde"), "error": [None, "bad", None, None, None]})
    valid = np.array([True, False, True, True, True])
    vectors = np.arange(20, dtype=np.float32).reshape(5, 4)
    schema = pa.schema([("sample_id", pa.string()), ("embedding", pa.list_(pa.float32())),
                        ("error", pa.string())])  # fmt: skip
    batches = list(_Embedded(columns, vectors, valid).record_batches(schema))
    assert [b.num_rows for b in batches] == [2, 2, 1]
    lists = pa.Table.from_batches(batches).column("embedding").to_pylist()
    assert lists == [[0, 1, 2, 3], None, [8, 9, 10, 11], [12, 13, 14, 15], [16, 17, 18, 19]]


def test_classify_fn_matches_scores_from_embed_pass() -> None:
    spec = tiny_spec()
    embedded = next(make_embed_fn(spec)(iter([images_frame()])))
    stored = embedded[["sample_id", "embedding"]].copy()
    stored["embedding"] = [None if e is None else e.tolist() for e in stored["embedding"]]
    scored = next(make_classify_fn(spec)(iter([stored])))
    assert list(scored.columns) == ["sample_id", "aesthetic_score", "nsfw_score"]
    for col in ("aesthetic_score", "nsfw_score"):
        np.testing.assert_allclose(scored[col], embedded[col], atol=1e-5, equal_nan=True)
    schema = "sample_id string, aesthetic_score double, nsfw_score double"
    assert classify_output_schema(spec) == schema


def test_model_loads_once_per_worker() -> None:
    spec = tiny_spec()
    fn = make_embed_fn(spec)
    list(fn(iter([images_frame()])))
    keys_after_first = model_cache.cached_keys()
    list(make_embed_fn(tiny_spec())(iter([images_frame()])))  # an equal spec: same cache entry
    assert model_cache.cached_keys() == keys_after_first
    assert sum(1 for k in keys_after_first if k[0] == "embedder") == 1
    assert any(k[-1] == "cpu" for k in keys_after_first)


@pytest.mark.skipif(not (MODELS / "reference_scores.npz").exists(), reason=f"no {MODELS}")
def test_classify_fn_with_real_weights_parity() -> None:
    ref = np.load(MODELS / "reference_scores.npz")
    spec = EmbedSpec(
        heads=(
            HeadSpec("aesthetic", weights=str(MODELS / "sac+logos+ava1-l14-linearMSE.pth")),
            {"name": "nsfw", "weights": str(MODELS / "clip_autokeras_binary_nsfw.safetensors")},
        )
    )
    embeddings = list(ref["embeddings"])
    frame = pd.DataFrame({"sample_id": [f"id{i}" for i in range(64)], "embedding": embeddings})
    frame.loc[3, "embedding"] = None
    out = next(make_classify_fn(spec)(iter([frame])))
    keep = np.arange(64) != 3
    np.testing.assert_allclose(out["aesthetic_score"][keep], ref["aesthetic"][keep], atol=1e-4)
    np.testing.assert_allclose(out["nsfw_score"][keep], ref["nsfw_port"][keep], atol=1e-5)
    assert np.isnan(out.loc[3, "aesthetic_score"]) and np.isnan(out.loc[3, "nsfw_score"])


@pytest.mark.skipif(not (MODELS / "reference_scores.npz").exists(), reason=f"no {MODELS}")
def test_real_head_on_tiny_model_fails_with_dimension_message() -> None:
    spec = tiny_spec(
        heads=[{"name": "aesthetic", "weights": str(MODELS / "sac+logos+ava1-l14-linearMSE.pth")}]
    )
    with pytest.raises(ValueError, match="aesthetic head expects 768-d .* gives 1000-d"):
        list(make_embed_fn(spec)(iter([images_frame()])))


def test_custom_embedder_and_custom_head_by_class_path() -> None:
    spec = EmbedSpec(
        embedder_class="tests.test_embedders:MeanColor",
        normalize=False,
        heads=[
            {
                "name": "mine",
                "class_path": "tests.test_classifiers:DoubleNorm",
                "random_init": True,
                "output_column": "mine_score",
            }
        ],
    )
    assert spec_model_id(spec) == "mean-color-v1"
    out = next(make_embed_fn(spec)(iter([images_frame()])))
    signals = ["clip_score", "sharpness", "colorfulness", "grayscale"]
    assert list(out.columns) == ["sample_id", "embedding", "mine_score", *signals, "error"]
    np.testing.assert_allclose(out.loc[0, "embedding"], [2.0, 1.0, 1.0], atol=1e-6)
    # the head sees the L2-normalised embedding: 2 * |(2,1,1)/sqrt(6)| = 2
    assert out.loc[0, "mine_score"] == pytest.approx(2.0, abs=1e-5)
    assert out["error"].notna().tolist() == [False, True, True, False]


def test_spec_is_picklable_hashable_and_coerces_config() -> None:
    spec = tiny_spec(heads=[{"name": "aesthetic", "random_init": True}])
    assert isinstance(spec.heads, tuple) and isinstance(spec.heads[0], HeadSpec)
    again = pickle.loads(pickle.dumps(spec))
    assert again == spec and hash(again) == hash(spec)
    assert spec_model_id(spec) == "test_vit+random"
    assert spec_model_id(EmbedSpec()) == "vit_large_patch14_clip_quickgelu_224.openai"
    cloudpickle = pytest.importorskip("pyspark.cloudpickle")  # how Spark ships the function
    fn = pickle.loads(cloudpickle.dumps(make_embed_fn(spec)))
    assert next(fn(iter([images_frame().iloc[:1]])))["error"].isna().all()


def test_config_errors_surface_on_the_driver() -> None:
    with pytest.raises(ValueError, match="unknown key"):
        EmbedSpec(heads=[{"name": "aesthetic", "weigths": "x"}])
    dup = tiny_spec(heads=[HeadSpec("aesthetic", random_init=True)] * 2)
    with pytest.raises(ValueError, match="several heads write"):
        make_embed_fn(dup)
    with pytest.raises(ValueError, match="unknown head"):
        head_columns(tiny_spec(heads=[HeadSpec("nope")]))


def test_missing_input_columns() -> None:
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['image'\]"):
        list(make_embed_fn(tiny_spec())(iter([pd.DataFrame({"sample_id": ["a"]})])))
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['embedding'\]"):
        list(make_classify_fn(tiny_spec())(iter([pd.DataFrame({"sample_id": ["a"]})])))


def test_classify_all_missing_embeddings() -> None:
    frame = pd.DataFrame({"sample_id": ["a", "b"], "embedding": [None, None]})
    out = next(make_classify_fn(tiny_spec())(iter([frame])))
    assert out[["aesthetic_score", "nsfw_score"]].isna().all().all()


def test_signals_off_leaves_them_null_and_the_embeddings_unchanged() -> None:
    frame = images_frame()
    on = next(iter(make_embed_fn(tiny_spec())(iter([frame]))))
    model_cache.clear_cache()
    off = next(iter(make_embed_fn(tiny_spec(signals=False))(iter([frame]))))
    assert off["error"].tolist() == on["error"].tolist()
    ok = on["error"].isna().to_numpy()
    assert on.loc[ok, ["sharpness", "colorfulness", "grayscale"]].notna().all().all()
    assert off[["sharpness", "colorfulness", "grayscale"]].isna().all().all()
    for a, b in zip(on.loc[ok, "embedding"], off.loc[ok, "embedding"], strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(on["aesthetic_score"], off["aesthetic_score"])
