# image2sdr developer commands.  Every target installs what it needs on first use.
PYTHON ?= python3
VENV := .venv
XVENV := .venv-export
PY := $(VENV)/bin/python
MODELS := models

.PHONY: setup models test bench bench-quality bench-index lint clean

## setup: the serving virtualenv (no torch in it)
setup: $(VENV)/.installed
$(VENV)/.installed: server/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e 'server[dev]'
	touch $@

## models: export the embedded models to ONNX once, in a separate venv with torch
models: $(MODELS)/manifest.json
$(MODELS)/manifest.json: server/tools/export_models.py requirements-export.txt
	$(PYTHON) -m venv $(XVENV)
	$(XVENV)/bin/python -m pip install -q -r requirements-export.txt
	$(XVENV)/bin/python -W ignore server/tools/export_models.py $(MODELS)

## test: the whole suite, real models, real files
test: setup models
	$(PY) -m pytest

## bench: encoder throughput, cold term SDRs, stage shares, merges/s vs the 2018 algorithm
bench: setup models
	$(PY) benchmarks/bench_encoder.py

## bench-quality: term-SDR similarity vs human ratings (WordSim-353, SimLex-999)
bench-quality: setup models
	$(PY) benchmarks/bench_quality.py

## bench-index: the SDR index on 1M synthetic SDRs
bench-index: setup
	$(PY) benchmarks/bench_index.py

lint: setup
	$(PY) -m ruff check server tests benchmarks
	$(PY) -m mypy

clean:
	rm -rf $(VENV) $(XVENV) $(MODELS)
