"""The built wheel carries conf/ (as the package `curator_conf`), and an install of it or the
`--py-files` zip finds its profiles with no checkout on sys.path. One wheel build, seconds."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from spark_jobs.paths import ROOT, conf_dir, packaged_conf

# What a job needs from conf/ on a cluster (paths inside the package).
NEEDED = (
    "spark/local.conf",
    "spark/gpu-cluster.conf",
    "spark/log4j2.properties",
    "versions.yaml",
    "curation.yaml",
    "demo.yaml",
    "jobs/curation.json",
)

# Run in a fresh interpreter: no site (so no editable-install finder), no checkout on sys.path.
PROBE = r"""
import json, os, sys
from pathlib import Path
import spark_jobs, curator_udfs, curator_conf
from spark_jobs.paths import conf_dir, resolve_config_path, versions
from spark_jobs.session import read_profile
checkout = os.environ["CHECKOUT"]
mods = [spark_jobs.__file__, curator_udfs.__file__, curator_conf.__file__]
assert not any(m.startswith(checkout) for m in mods), mods
print(json.dumps({
    "modules": mods,
    "conf_dir": str(conf_dir()),
    "master": read_profile("local")["spark.master"],
    "plugins": read_profile("gpu-cluster")["spark.plugins"],
    "spark": versions()["spark"],
    "config": str(resolve_config_path("conf/curation.yaml")),
    "log4j": (conf_dir() / "spark" / "log4j2.properties").is_file(),
}))
"""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`pip wheel --no-deps` of a copy of the project's sources (no build/ left in the checkout)."""
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("conf", "spark_jobs", "curator_udfs"):
        shutil.copytree(ROOT / name, src / name, ignore=ignore)
    out = tmp_path_factory.mktemp("dist")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "-w", str(out), str(src)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    (whl,) = out.glob("image_curator-*.whl")
    return whl


def test_the_wheel_carries_conf(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        for rel in NEEDED:
            assert f"curator_conf/{rel}" in names, rel
            assert z.read(f"curator_conf/{rel}") == (ROOT / "conf" / rel).read_bytes(), rel
        assert {"spark_jobs/paths.py", "curator_udfs/__init__.py"} <= names
        metadata = z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "Requires-Python: <3.13,>=3.11" in metadata
    assert "Provides-Extra: gpu" in metadata and "cuml-cu12" in metadata


def _probe(tmp_path: Path, *entries: Path, env: dict[str, str] | None = None) -> dict:
    """Run PROBE with only `entries` and the venv's third-party packages on sys.path."""
    import json

    site = sysconfig.get_paths()["purelib"]  # its .pth files (the editable finder) stay unread
    run_env = {
        **{k: v for k, v in os.environ.items() if k != "CURATOR_CONF_DIR"},
        "PYTHONPATH": os.pathsep.join([*map(str, entries), site]),
        "CHECKOUT": str(ROOT),
        **(env or {}),
    }
    proc = subprocess.run(
        [sys.executable, "-S", "-c", PROBE],
        capture_output=True, text=True, timeout=120, env=run_env, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_an_installed_wheel_reads_its_own_profiles(wheel: Path, tmp_path: Path) -> None:
    target = tmp_path / "site"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index",
         "--target", str(target), str(wheel)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = _probe(tmp_path, target)
    assert all(m.startswith(str(target)) for m in got["modules"]), got["modules"]
    assert got["conf_dir"] == str(target / "curator_conf")
    assert got["master"] == "local[*]" and got["plugins"] == "com.nvidia.spark.SQLPlugin"
    assert got["spark"] == "4.0.1" and got["log4j"]
    assert got["config"] == str(target / "curator_conf" / "curation.yaml")

    # CURATOR_CONF_DIR still wins over the packaged copy
    mine = tmp_path / "myconf"
    shutil.copytree(target / "curator_conf", mine)
    (mine / "spark" / "local.conf").write_text("spark.master  local[3]\n")
    assert _probe(tmp_path, target, env={"CURATOR_CONF_DIR": str(mine)})["master"] == "local[3]"


def test_the_py_files_zip_reads_its_profiles(wheel: Path, tmp_path: Path) -> None:
    """`make cluster-bundle`'s zip: the wheel's packages; conf/ is extracted from the zip once."""
    bundle = tmp_path / "image_curator.zip"
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(bundle, "w") as dst:
        for info in src.infolist():
            if info.filename.split("/")[0] in {"spark_jobs", "curator_udfs", "curator_conf"}:
                dst.writestr(info, src.read(info))
    got = _probe(tmp_path, bundle)
    assert all(m.startswith(str(bundle)) for m in got["modules"]), got["modules"]
    extracted = Path(got["conf_dir"])
    assert extracted.is_dir() and not str(extracted).startswith(str(bundle))
    for rel in NEEDED:
        assert (extracted / rel).read_bytes() == (ROOT / "conf" / rel).read_bytes(), rel
    assert got["master"] == "local[*]" and got["log4j"]
    assert got["config"] == str(extracted / "curation.yaml")
    assert _probe(tmp_path, bundle)["conf_dir"] == got["conf_dir"]  # same content, same dir


def test_the_editable_install_reads_the_checkout_conf() -> None:
    assert Path(str(packaged_conf())) == ROOT / "conf"
    assert conf_dir() == ROOT / "conf" or "CURATOR_CONF_DIR" in os.environ
