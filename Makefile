# Two commands do all the set-up on a fresh machine:
#   make demo   — sample shards → ingest on the embedded default, then a SQL query
#   make test   — the test suite
# Both install what they need (virtualenv + pip deps, JVM jars from Maven Central) once.

PY      ?= python3.11
VENV    ?= .venv
BIN     := $(VENV)/bin
PYTHON  := $(BIN)/python
DELTA   := $(shell sed -n 's/^delta: *\([0-9.]*\).*/\1/p' conf/versions.yaml)
RAPIDS  := $(shell sed -n 's/^rapids: *\([0-9.]*\).*/\1/p' conf/versions.yaml)
JARS    := jars/delta-spark_2.13-$(DELTA).jar jars/delta-storage-$(DELTA).jar
RAPIDS_JAR := jars/rapids-4-spark_2.13-$(RAPIDS).jar
DEMO_DIR := demo

export PYSPARK_PYTHON := $(abspath $(PYTHON))
export PYSPARK_DRIVER_PYTHON := $(abspath $(PYTHON))

.PHONY: setup install jars rapids-jar chromium cluster-bundle demo test test-faults bench lint clean

setup: install jars rapids-jar

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml conf/constraints.txt
	@command -v $(PY) >/dev/null || { echo "need $(PY) (Python 3.11)"; exit 2; }
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c conf/constraints.txt -e '.[dev]'
	touch $@

jars: $(JARS)

$(JARS): conf/pom.xml conf/versions.yaml
	mvn -q -B -f conf/pom.xml dependency:copy-dependencies -DoutputDirectory=$(abspath jars) \
	  -DincludeScope=runtime -DexcludeGroupIds=org.scala-lang,org.antlr
	@touch $(JARS)

rapids-jar: $(RAPIDS_JAR)

$(RAPIDS_JAR): conf/versions.yaml
	mvn -q -B dependency:copy -Dartifact=com.nvidia:rapids-4-spark_2.13:$(RAPIDS) \
	  -DoutputDirectory=$(abspath jars)

# Debian's Chromium, for the report's browser test (headless; no browser download by tools).
chromium:
	@command -v chromium >/dev/null || { \
	  echo "installing Debian's chromium for the report test"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	  || { echo "could not install chromium (need root and Debian's package mirror)"; exit 1; }; }

# What a cluster needs: the project as a wheel (spark-submit --py-files) and the jar list.
cluster-bundle: install jars rapids-jar
	rm -rf dist && $(BIN)/pip wheel -q --no-deps -w dist .
	ls jars/*.jar > dist/jars.txt
	@echo "spark-submit --properties-file conf/spark/gpu-cluster.conf --py-files dist/*.whl"
	@echo "  --jars $$(paste -sd, dist/jars.txt) spark_jobs/<job>.py --config conf/curation.yaml"

demo: install jars
	rm -rf $(DEMO_DIR)
	$(BIN)/curator sample-shards --out $(DEMO_DIR)/shards --shards 4 --per-shard 100
	$(BIN)/curator run --config conf/demo.yaml
	$(BIN)/curator sql --config conf/demo.yaml \
	  "SELECT image_format, count(*) AS n, round(avg(width)) AS avg_width FROM curator.images GROUP BY image_format ORDER BY n DESC"
	$(BIN)/curator report --config conf/demo.yaml --out $(DEMO_DIR)/report
	@echo "report: $(abspath $(DEMO_DIR))/report/index.html"

test: setup chromium
	$(BIN)/python -m pytest -q -m "not slow"

test-faults: setup
	$(BIN)/python -m pytest -q -m slow

bench: setup
	$(PYTHON) bench/ingest.py
	$(PYTHON) bench/embed.py
	$(PYTHON) bench/filter.py
	$(PYTHON) bench/dedup.py

lint: install
	$(BIN)/ruff check spark_jobs curator_udfs tests bench
	$(BIN)/mypy spark_jobs curator_udfs

clean:
	rm -rf $(DEMO_DIR) warehouse spark-warehouse .pytest_cache
