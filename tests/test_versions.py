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
    assert all(c.endswith(":" + vs["delta"]) for c in vs["jars"] if c.startswith("io.delta:"))
    assert vs["rapids_jar"].endswith(":" + vs["rapids"])
    # object storage: hadoop-aws at pyspark's Hadoop, the AWS SDK v2 bundle hadoop-aws names
    assert f"org.apache.hadoop:hadoop-aws:{vs['hadoop']}" in vs["object_store_jars"]
    assert f"software.amazon.awssdk:bundle:{vs['aws_sdk']}" in vs["object_store_jars"]
    assert re.search(rf"<hadoop.version>{re.escape(vs['hadoop'])}</hadoop.version>", pom)
    assert re.search(rf"<aws.sdk.version>{re.escape(vs['aws_sdk'])}</aws.sdk.version>", pom)


def test_hadoop_aws_matches_the_hadoop_pyspark_ships() -> None:
    """S3A must be built for the Hadoop on Spark's classpath (mixing versions fails at load)."""
    from pathlib import Path

    import pyspark

    jars = Path(pyspark.__file__).parent / "jars"
    assert (jars / f"hadoop-client-api-{versions()['hadoop']}.jar").is_file()


def test_jars_are_present_and_rapids_lists_this_spark() -> None:
    """The RAPIDS jar carries one shim per Spark version it supports: ours must be there."""
    import zipfile

    vs = versions()
    for coord in [*vs["jars"], *vs["object_store_jars"], vs["rapids_jar"]]:
        assert jar_file(coord).is_file(), f"{coord}: run `make jars rapids-jar`"
    shim = "spark" + vs["spark"].replace(".", "")
    with zipfile.ZipFile(jar_file(vs["rapids_jar"])) as z:
        assert any(n.startswith(shim + "/") for n in z.namelist()), (
            f"RAPIDS {vs['rapids']} lacks {shim}"
        )


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_python_311_and_312_are_supported() -> None:
    """Databricks Runtime 17 runs 3.12; `make check-py312` resolves every pin for it."""
    from packaging.specifiers import SpecifierSet

    spec = SpecifierSet(_project()["requires-python"])
    assert {"3.11.7", "3.12.3"} <= set(spec.filter(["3.10.14", "3.11.7", "3.12.3", "3.13.0"]))
    assert "3.13.0" not in spec and "3.10.14" not in spec


def test_extras_gpu_and_dev() -> None:
    from packaging.requirements import Requirement

    extras = _project()["optional-dependencies"]
    assert [Requirement(r).name for r in extras["gpu"]] == ["cuml-cu12"]
    dev = {Requirement(r).name: Requirement(r) for r in extras["dev"]}
    assert {"import-linter", "databricks-sdk", "deltalake", "duckdb"} <= set(dev)
    # the delta extension wheel carries the binary of one DuckDB version: pinned together
    assert str(dev["duckdb"].specifier) == str(dev["duckdb-extension-delta"].specifier)
    assert str(dev["duckdb"].specifier).startswith("==")
    pins = dict(
        line.strip().lower().replace("_", "-").split("==")
        for line in (ROOT / "conf" / "constraints.txt").read_text().splitlines()
        if "==" in line
    )
    assert pins["duckdb"] == pins["duckdb-extension-delta"] == version("duckdb")


def test_versions_yaml_names_the_python_range_and_the_gpu_extra() -> None:
    vs = versions()
    assert vs["python"] == _project()["requires-python"]
    assert any(r.startswith(vs["cuml"]) for r in _project()["optional-dependencies"]["gpu"])
