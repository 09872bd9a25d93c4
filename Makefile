# make demo  — create the environment if missing, then train/compress/benchmark the digits demo
# make test  — create the environment if missing, then run the test suite
# make bench — the core benchmark suite (resnet18, mobilenet_v3_small; edgeship vs direct vs torch)

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python

.PHONY: demo test bench env clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	touch $@

env: $(VENV)/.installed

demo: env
	$(VENV)/bin/edgeship demo --out out/demo

test: env
	$(PY) -m pytest -q

bench: env
	$(PY) -m edgeship.benchmarks.suites.core --out out/bench-core

clean:
	rm -rf out build *.egg-info
