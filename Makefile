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
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: bench test install clean

$(STAMP): pyproject.toml constraints-cpu.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(CONSTRAINTS) -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

bench: $(STAMP)
	$(VENV)/bin/rlhf-gym bench --agent $(AGENT) --vs $(VS) --out results.json

test: $(STAMP)
	sh scripts/install-browser.sh
	$(PY) -m pytest

clean:
	rm -rf $(VENV) results.json
