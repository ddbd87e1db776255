# tpdump — developer entry points. `make demo` and `make test` work on a fresh clone.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: demo test check lint typecheck bench soak clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m tpdump demo

test: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check tpdump tests bench

typecheck: $(STAMP)
	$(VENV)/bin/mypy --strict tpdump

check: lint typecheck test

bench: $(STAMP)
	$(PY) bench/fanout.py
	$(PY) bench/sos_compare.py
	$(PY) bench/kube.py
	$(PY) bench/profiles.py
	$(PY) bench/redact_throughput.py
	$(PY) bench/obfuscate_compare.py
	$(PY) bench/scale.py
	$(PY) bench/ssh_floor.py

# A longer fault soak than `make test` runs (tests/soak): 100 dumps of a cluster three times
# the size, bounded by a 25-minute limit; the figures go to bench/out/soak.json.
soak: $(STAMP)
	mkdir -p bench/out
	TPDUMP_SOAK_RUNS=100 TPDUMP_SOAK_IN_PROCESS=10 TPDUMP_SOAK_SCALE=3 \
	TPDUMP_SOAK_MAX_SECONDS=1500 TPDUMP_SOAK_REPORT=bench/out/soak.json \
	$(PY) -m pytest -q -s -m soak tests/soak

clean:
	rm -rf $(VENV) dumps build *.egg-info
