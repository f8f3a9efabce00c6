# One command each for setup, test, lint, demo and bench (README lists them in this order).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
export BERT_DATA_DIR ?= $(abspath ../shared/data)

.PHONY: setup test lint format demo bench clean

setup: $(STAMP) ## create .venv and install the project with all extras (quick when done)

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# CPU wheel from local disk; any other torch spec downloads a multi-GB CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e '.[train,serve,dev]'
	@touch $@

test: setup ## run the test suite (real data from BERT_DATA_DIR where present)
	$(PY) -m pytest -q --timeout=900 $(PYTEST_ARGS)

lint: setup ## ruff + mypy
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format: setup
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

demo: setup ## build a small BERT from embedded text (tokenizer + pretraining)
	$(PY) -m training.demo --out runs/demo

bench: setup ## pretraining throughput against the transformers run_mlm recipe
	$(PY) benchmarks/pretrain_throughput.py --out runs/bench

clean:
	rm -rf runs .pytest_cache .mypy_cache .ruff_cache
