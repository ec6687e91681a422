# The two entry points a newcomer needs (see README): `make demo` and `make test`.
# Both create/refresh the virtual environment first and are safe to re-run.
PY ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export YOLO_OFFLINE := 1
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export YOLO_CONFIG_DIR := $(CURDIR)/.cache/ultralytics
export RAY_USAGE_STATS_ENABLED := 0

.PHONY: env demo test bench clean

env: $(STAMP)

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

demo: env
	$(BIN)/controller demo --out runs/demo

test: env
	$(BIN)/python -m pytest -q tests

bench: env
	$(BIN)/python bench/perf_model_fit.py
	$(BIN)/python bench/planner_bench.py
	$(BIN)/python bench/policies_bench.py --quick
	$(BIN)/python bench/load_bench.py --quick
	$(BIN)/python -m bench.serving_bench --quick
	$(BIN)/python bench/models_cpu.py --variants yolo11n,b0,base --batches 1,4

clean:
	rm -rf $(VENV) runs .pytest_cache
