# The two commands a new user needs: `make demo` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
CONFIG ?= configs/demo.yaml

.PHONY: install demo test test-fast compile clean

# torch goes in FIRST and alone: `torch==2.13.0` takes the local CPU build; any other spec pulls
# several GB of CUDA wheels. Nothing after it may replace it (checked below).
$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -r requirements.txt -r requirements-dev.txt
	$(BIN)/pip install --quiet --no-deps -e .
	$(BIN)/python -c "import torch, sys; v = torch.__version__; sys.exit(0 if v.startswith('2.13.0') else f'torch was replaced: {v}')"
	$(BIN)/pip check
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/mixtune run --local --config $(CONFIG) --summary-json .mixtune/last-summary.json

test: install
	$(BIN)/pytest -q

test-fast: install
	$(BIN)/pytest -q -m "not slow"

compile: install
	$(BIN)/mixtune compile --config $(CONFIG) --output mixtune-pipeline.yaml

clean:
	rm -rf .mixtune mixtune-pipeline.yaml
