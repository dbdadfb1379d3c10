"""curator_udfs.zip_imports: archives on sys.path are re-read only when they change."""

from __future__ import annotations

import importlib
import sys
import zipfile
import zipimport
from pathlib import Path

import pytest

from curator_udfs.zip_imports import reread_zips_only_when_changed

pytestmark = pytest.mark.skipif(
    sys.version_info >= (3, 12), reason="Python 3.12+ invalidates zip caches lazily itself"
)


def _zip(path: Path, modules: dict[str, str]) -> None:
    with zipfile.ZipFile(path, "w") as zf:
        for name, source in modules.items():
            zf.writestr(f"{name}.py", source)


def test_unchanged_archive_is_not_reread_and_a_changed_one_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert reread_zips_only_when_changed()  # importing curator_udfs applied it already
    archive = tmp_path / "pkgs.zip"
    _zip(archive, {"zi_first": "VALUE = 1\n"})
    monkeypatch.syspath_prepend(str(archive))
    assert importlib.import_module("zi_first").VALUE == 1
    importer = sys.path_importer_cache[str(archive)]
    assert isinstance(importer, zipimport.zipimporter)

    reads: list[str] = []
    real = zipimport._read_directory  # type: ignore[attr-defined]
    monkeypatch.setattr(
        zipimport, "_read_directory", lambda p: reads.append(p) or real(p), raising=True
    )
    importlib.invalidate_caches()  # the first call reads once, then remembers the stat
    for _ in range(5):
        importlib.invalidate_caches()  # what PySpark's worker does before every task
    assert reads.count(str(archive)) <= 1

    reads.clear()
    _zip(archive, {"zi_first": "VALUE = 1\n", "zi_second": "VALUE = 2\n"})  # rewritten in place
    importlib.invalidate_caches()
    assert reads == [str(archive)]
    assert importlib.import_module("zi_second").VALUE == 2
    for name in ("zi_first", "zi_second"):
        sys.modules.pop(name, None)


def test_applying_twice_wraps_once() -> None:
    reread_zips_only_when_changed()
    first = zipimport.zipimporter.invalidate_caches
    reread_zips_only_when_changed()
    assert zipimport.zipimporter.invalidate_caches is first
