"""ids (shard uri normalisation, sample ids) and shard listing, no Spark."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import fsspec
import pytest

from curator_udfs.ids import normalize_shard_uri, sample_id
from curator_udfs.shard_listing import ShardFile, list_shards
from tests.badshards import good_members, write_tar


def test_local_spellings_normalise_to_one_uri(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    shard = tmp_path / "d" / "000.tar"
    shard.parent.mkdir()
    shard.write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    want = "file://" + shard.resolve().as_posix()
    spellings = [
        "d/000.tar",
        "./d/../d/000.tar",
        str(shard),
        f"file:{shard}",
        f"file://{shard}",
        f"file://localhost{shard}",
        f"FILE://{shard}",
    ]
    assert {normalize_shard_uri(s) for s in spellings} == {want}
    assert want.startswith("file:///")


def test_symlinked_path_resolves(tmp_path: Path):
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "a.tar").write_bytes(b"")
    os.symlink(tmp_path / "real", tmp_path / "link")
    assert normalize_shard_uri(str(tmp_path / "link" / "a.tar")) == normalize_shard_uri(
        str(tmp_path / "real" / "a.tar")
    )


@pytest.mark.parametrize(
    "uri", ["s3://bucket/x/000.tar", "hdfs://nn:8020/a/b.tar", "gs://b/c.tgz", "memory://m/a.tar"]
)
def test_remote_uris_unchanged(uri: str):
    assert normalize_shard_uri(uri) == uri


def test_sample_id_is_sha256_prefix():
    uri = "file:///data/000.tar"
    want = hashlib.sha256(b"file:///data/000.tar\x00000000001").hexdigest()[:24]
    assert sample_id(uri, "000000001") == want
    assert len(want) == 24
    assert sample_id(uri, "000000002") != want
    assert sample_id("file:///data/001.tar", "000000001") != want
    # The NUL separator keeps (uri, key) pairs apart that plain concatenation would merge.
    assert sample_id("s3://b/a", "bc") != sample_id("s3://b/ab", "c")


@pytest.fixture()
def shard_tree(tmp_path: Path) -> Path:
    members = good_members(1)
    write_tar(tmp_path / "in" / "00000.tar", members)
    write_tar(tmp_path / "in" / "sub" / "00001.tar.gz", members, gz=True)
    write_tar(tmp_path / "in" / "sub" / "deeper" / "00002.tgz", members, gz=True)
    write_tar(tmp_path / "in" / "UPPER.TAR", members)
    (tmp_path / "in" / "00000.parquet").write_bytes(b"PAR1")
    (tmp_path / "in" / "00000_stats.json").write_text("{}")
    (tmp_path / "in" / "notes.txt").write_text("x")
    return tmp_path / "in"


def _names(shards: list[ShardFile]) -> list[str]:
    return [s.uri.rsplit("/", 1)[1] for s in shards]


def test_directory_lists_shards_recursively(shard_tree: Path):
    shards = list_shards([str(shard_tree)])
    assert _names(shards) == ["00000.tar", "UPPER.TAR", "00001.tar.gz", "00002.tgz"]
    assert [s.uri for s in shards] == sorted(s.uri for s in shards)
    for s in shards:
        assert s.uri.startswith("file:///")
        path = Path(s.uri[len("file://") :])
        assert s.size == path.stat().st_size
        assert s.mtime == pytest.approx(path.stat().st_mtime)


def test_glob_single_file_and_uri(shard_tree: Path, monkeypatch: pytest.MonkeyPatch):
    assert _names(list_shards([str(shard_tree / "*.tar")])) == ["00000.tar"]
    # A glob over everything only keeps shard suffixes; matched directories are searched.
    assert len(list_shards([str(shard_tree / "*")])) == 4
    assert _names(list_shards([str(shard_tree / "**" / "*.tgz")])) == ["00002.tgz"]
    # A file named explicitly is taken whatever its suffix.
    assert _names(list_shards([str(shard_tree / "notes.txt")])) == ["notes.txt"]
    assert _names(list_shards([f"file://{shard_tree}/sub"])) == ["00001.tar.gz", "00002.tgz"]
    monkeypatch.chdir(shard_tree)
    assert list_shards(["00000.tar"]) == list_shards([str(shard_tree / "00000.tar")])


def test_overlapping_patterns_deduplicated(shard_tree: Path):
    shards = list_shards(
        [str(shard_tree), str(shard_tree / "*.tar"), f"file://{shard_tree}/00000.tar"]
    )
    assert len(shards) == 4
    assert len({s.uri for s in shards}) == 4


@pytest.mark.parametrize("pattern", ["missing_dir", "missing_dir/*.tar", "nothing_here_*.tar"])
def test_pattern_matching_nothing_raises(tmp_path: Path, pattern: str):
    with pytest.raises(FileNotFoundError, match="missing_dir|nothing_here"):
        list_shards([str(tmp_path / pattern)])


def test_directory_without_shards_raises(shard_tree: Path):
    with pytest.raises(FileNotFoundError, match="empty"):
        (shard_tree / "empty").mkdir()
        list_shards([str(shard_tree / "empty")])


def test_fsspec_uri_other_filesystem():
    fs = fsspec.filesystem("memory")
    fs.pipe(
        {
            "/curator_test/a/0.tar": b"x" * 10,
            "/curator_test/a/b/1.tar": b"y",
            "/curator_test/a/c.txt": b"",
        }
    )
    try:
        shards = list_shards(["memory://curator_test/a"])
        # The uri is fsspec's canonical spelling for the filesystem, and opens again.
        assert [s.uri for s in shards] == [
            fs.unstrip_protocol("/curator_test/a/0.tar"),
            fs.unstrip_protocol("/curator_test/a/b/1.tar"),
        ]
        with fsspec.open(shards[1].uri, "rb") as f:
            assert f.read() == b"y"
        assert shards[0].size == 10
        assert list_shards(["memory://curator_test/a/*.tar"]) == shards[:1]
    finally:
        fs.rm("/curator_test", recursive=True)
