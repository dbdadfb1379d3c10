# Two commands do all the set-up on a fresh machine:
#   make demo   — sample shards → ingest on the embedded default, then a SQL query
#   make test   — the test suite
# Both install what they need (virtualenv + pip deps, JVM jars from Maven Central) once.

PY      ?= python3.11
VENV    ?= .venv
BIN     := $(VENV)/bin
PYTHON  := $(BIN)/python
SPARK   := $(shell sed -n 's/^spark: *\([0-9.]*\).*/\1/p' conf/versions.yaml)
DELTA   := $(shell sed -n 's/^delta: *\([0-9.]*\).*/\1/p' conf/versions.yaml)
RAPIDS  := $(shell sed -n 's/^rapids: *\([0-9.]*\).*/\1/p' conf/versions.yaml)
HADOOP  := $(shell sed -n 's/^hadoop: *\([0-9.]*\).*/\1/p' conf/versions.yaml)
AWS_SDK := $(shell sed -n 's/^aws_sdk: *\([0-9.]*\).*/\1/p' conf/versions.yaml)
JARS    := jars/delta-spark_2.13-$(DELTA).jar jars/delta-storage-$(DELTA).jar \
           jars/hadoop-aws-$(HADOOP).jar jars/bundle-$(AWS_SDK).jar
RAPIDS_JAR := jars/rapids-4-spark_2.13-$(RAPIDS).jar
DEMO_DIR := demo

export PYSPARK_PYTHON := $(abspath $(PYTHON))
export PYSPARK_DRIVER_PYTHON := $(abspath $(PYTHON))

.PHONY: setup test-setup install jars rapids-jar chromium cluster-bundle check-py312 demo test test-faults bench lint clean

# The set-up steps wait on the network, not on each other: they run side by side (jars and the
# RAPIDS jar one after the other, as two Maven runs must not fill ~/.m2 at once).
SETUP := install jars rapids-jar

setup:
	@$(MAKE) --no-print-directory -j3 --output-sync=target $(SETUP)

# What `make test` needs: the set-up and Debian's Chromium, side by side (.ci/run calls it too).
test-setup:
	@$(MAKE) --no-print-directory -j4 --output-sync=target $(SETUP) chromium

install: $(VENV)/.installed

# uv installs the pinned set (the same input as pip: `-c conf/constraints.txt`), fetching and
# unpacking wheels in parallel: from empty caches, measured on this machine, 42 s against pip's
# 136 s for the same 166 packages and versions (torch's CUDA libraries are most of the 4 GB).
# The venv keeps pip: check-py312 and cluster-bundle use `pip wheel` and `pip install --dry-run`.
UV_VERSION := 0.13.9

$(VENV)/.installed: pyproject.toml conf/constraints.txt
	@command -v $(PY) >/dev/null || { echo "need $(PY) (Python 3.11 or 3.12)"; exit 2; }
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip uv==$(UV_VERSION)
	$(BIN)/uv pip install -q --compile-bytecode --python $(PYTHON) -c conf/constraints.txt -e '.[dev]'
	touch $@

jars: $(JARS)

$(JARS) &: conf/pom.xml conf/versions.yaml
	mvn -q -B -f conf/pom.xml dependency:copy-dependencies -DoutputDirectory=$(abspath jars) \
	  -DincludeScope=runtime -DexcludeGroupIds=org.scala-lang,org.antlr
	@touch $(JARS)

rapids-jar: $(RAPIDS_JAR)

$(RAPIDS_JAR): conf/versions.yaml | $(JARS)
	mvn -q -B dependency:copy -Dartifact=com.nvidia:rapids-4-spark_2.13:$(RAPIDS) \
	  -DoutputDirectory=$(abspath jars)

# Debian's Chromium, for the report's browser test (headless; no browser download by tools).
chromium:
	@command -v chromium >/dev/null || { \
	  echo "installing Debian's chromium for the report test"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	  || { echo "could not install chromium (need root and Debian's package mirror)"; exit 1; }; }

# What a cluster needs, in dist/:
#   image_curator-<v>-py3-none-any.whl  pip install on the driver and executors (Databricks
#                                       `libraries`, a cluster library); carries conf/ inside
#   image_curator.zip                   the same packages (spark_jobs, curator_udfs, conf as
#                                       curator_conf) for `spark-submit --py-files`: Spark puts
#                                       only .zip/.egg/.jar py-files on the executors' sys.path
#   jars.txt                            the JVM jars for `--jars`
cluster-bundle: install jars rapids-jar
	rm -rf dist build
	$(BIN)/pip wheel -q --no-deps --no-build-isolation -w dist .
	rm -rf build && $(PYTHON) -m zipfile -e dist/image_curator-*.whl dist/.zip
	cd dist/.zip && $(abspath $(PYTHON)) -m zipfile -c ../image_curator.zip spark_jobs curator_udfs curator_conf
	rm -rf dist/.zip
	$(PYTHON) -c 'from spark_jobs.paths import jar_file, versions; v = versions(); \
	  w = lambda f, cs: open(f, "w").write("".join(f"{jar_file(c)}\n" for c in cs)); \
	  w("dist/jars.txt", v["jars"]); w("dist/object-store-jars.txt", v["object_store_jars"]); \
	  w("dist/gpu-jars.txt", [v["rapids_jar"]])'
	@echo "spark-submit --py-files dist/image_curator.zip --jars \$$(paste -sd, dist/jars.txt)"
	@echo "  spark_jobs/<job>.py --config conf/curation.yaml   # + dist/object-store-jars.txt for an"
	@echo "  s3a:// warehouse, + dist/gpu-jars.txt with --properties-file conf/spark/gpu-cluster.conf"

# Python 3.12 (Databricks Runtime 17): the wheel and every pin (the dev extra too) must resolve
# to CPython 3.12 wheels for this platform. pyspark ships only an sdist: its wheel (pure Python,
# built once from pip's cache) is a local find-link, and ours is named by its file (PyPI has an
# unrelated project called image-curator). Resolution reads the wheels' metadata only;
# PY312_DOWNLOAD=1 downloads every wheel (3.6 GB) into $(PY312_DIR)/wheels instead.
# The [gpu] extra (cuML, Linux CUDA 12 wheels) is checked alone for 3.11 and 3.12, without its
# dependencies: its CUDA 12 toolkit pins cannot share one environment with torch's CUDA 13.
PY312_DIR ?= /tmp/pd312
PY312_PIP = $(if $(PY312_DOWNLOAD),download --dest $(PY312_DIR)/wheels,install --dry-run --ignore-installed --target $(PY312_DIR)/target --report $(PY312_DIR)/report.json)

check-py312: install
	rm -rf $(PY312_DIR)/local $(PY312_DIR)/target build && mkdir -p $(PY312_DIR)/local
	$(BIN)/pip wheel -q --no-deps --no-build-isolation -w $(PY312_DIR)/local . pyspark==$(SPARK)
	rm -rf build
	$(BIN)/pip $(PY312_PIP) -q --python-version 3.12 --only-binary=:all: \
	  --find-links $(PY312_DIR)/local -c conf/constraints.txt "$$(ls $(PY312_DIR)/local/image_curator-*.whl)[dev]"
	$(PYTHON) -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["gpu"]))' > $(PY312_DIR)/gpu.txt
	for v in 3.11 3.12; do $(BIN)/pip install -q --dry-run --ignore-installed --no-deps \
	  --only-binary=:all: --python-version $$v --target $(PY312_DIR)/gpu -r $(PY312_DIR)/gpu.txt \
	  || exit 1; done
	@echo "check-py312: image-curator[dev] and its pins resolve for CPython 3.12; [gpu] has 3.11/3.12 wheels"

demo: install jars
	rm -rf $(DEMO_DIR)
	$(BIN)/curator sample-shards --out $(DEMO_DIR)/shards --shards 4 --per-shard 100
	$(BIN)/curator run --config conf/demo.yaml
	$(BIN)/curator sql --config conf/demo.yaml \
	  "SELECT image_format, count(*) AS n, round(avg(width)) AS avg_width FROM curator.images GROUP BY image_format ORDER BY n DESC"
	$(BIN)/curator dedup-recall --config conf/demo.yaml $(DEMO_DIR)/shards/_planted.json
	$(BIN)/curator report --config conf/demo.yaml --out $(DEMO_DIR)/report
	@echo "report: $(abspath $(DEMO_DIR))/report/index.html"

# Two workers on the two cores, one test module at a time each (module fixtures built once).
test: test-setup
	$(BIN)/python -m tests.jvm_archive
	$(BIN)/python -m pytest -q -m "not slow" -n 2 --dist loadfile --no-loadscope-reorder

test-faults: setup
	$(BIN)/python -m tests.jvm_archive
	$(BIN)/python -m pytest -q -m slow

# bench/embed.py runs Daft side by side: daft 0.7.26 needs pyarrow < 26, so it gets a venv of
# its own that borrows this venv's torch and timm (bench/embed.py finds it there).
DAFT_VENV := .cache/bench-daft-venv

$(DAFT_VENV)/.installed: pyproject.toml
	$(PY) -m venv $(DAFT_VENV)
	$(DAFT_VENV)/bin/pip install -q "$$($(PYTHON) -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["bench"][0])')"
	$(PYTHON) -c 'import site; print(site.getsitepackages()[0])' > \
	  "$$($(DAFT_VENV)/bin/python -c 'import site; print(site.getsitepackages()[0])')/zz_main_venv.pth"
	touch $@

bench: setup $(DAFT_VENV)/.installed
	$(PYTHON) bench/ingest.py
	$(PYTHON) bench/embed.py
	$(PYTHON) bench/filter.py
	$(PYTHON) bench/export_plan.py
	$(PYTHON) bench/dedup.py

# ruff, mypy, and the Spark line: import-linter contracts in .importlinter (layers, no cycles).
lint: install
	$(BIN)/ruff check spark_jobs curator_udfs tests bench
	$(BIN)/mypy spark_jobs curator_udfs
	$(BIN)/lint-imports --no-cache

clean:
	rm -rf $(DEMO_DIR) warehouse spark-warehouse .pytest_cache
