"""The version set is pinned once (conf/versions.yaml) and everything agrees with it."""

from __future__ import annotations

import re
import tomllib
from importlib.metadata import version

from spark_jobs.paths import ROOT, jar_file, versions


def test_installed_python_packages_match_the_pins() -> None:
    vs = versions()
    assert version("pyspark") == vs["spark"]
    assert version("delta-spark") == vs["delta"]
    assert int(version("pandas").split(".")[0]) < 3


def test_pyproject_and_pom_agree_with_versions_yaml() -> None:
    vs = versions()
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert f"pyspark=={vs['spark']}" in deps
    assert f"delta-spark=={vs['delta']}" in deps
    pom = (ROOT / "conf" / "pom.xml").read_text()
    assert re.search(rf"<delta.version>{re.escape(vs['delta'])}</delta.version>", pom)
    assert all(c.endswith(":" + vs["delta"]) for c in vs["jars"])
    assert vs["rapids_jar"].endswith(":" + vs["rapids"])


def test_jars_are_present_and_rapids_lists_this_spark() -> None:
    """The RAPIDS jar carries one shim per Spark version it supports: ours must be there."""
    import zipfile

    vs = versions()
    for coord in [*vs["jars"], vs["rapids_jar"]]:
        assert jar_file(coord).is_file(), f"{coord}: run `make jars rapids-jar`"
    shim = "spark" + vs["spark"].replace(".", "")
    with zipfile.ZipFile(jar_file(vs["rapids_jar"])) as z:
        assert any(n.startswith(shim + "/") for n in z.namelist()), (
            f"RAPIDS {vs['rapids']} lacks {shim}"
        )
