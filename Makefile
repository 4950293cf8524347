# kdbook: every target sets up .venv itself, so a fresh clone needs one command.
#   make book   execute the notebooks into runs/<timestamp>/ (OUT=DIR to choose the folder)
#   make test   lint, unit tests, the book by papermill, nbval on the executed notebooks
#   make lab    JupyterLab on notebooks/
#   make clean  remove runs/

SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help
.DELETE_ON_ERROR:

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CI_RUN := runs/ci

.PHONY: help venv book test lab clean

help:
	@echo "make book   execute the notebooks into runs/<timestamp>/ (make book OUT=runs/mine)"
	@echo "make test   lint, unit tests, the book by papermill, nbval on the executed copies"
	@echo "make lab    open the notebooks in JupyterLab"
	@echo "make clean  remove runs/"

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --progress-bar off -e ".[dev]"
	$(BIN)/python -m ipykernel install --sys-prefix --name python3
	touch $@

book: $(STAMP)
	$(BIN)/kdbook book $(if $(OUT),--out $(OUT))

test: $(STAMP)
	$(BIN)/ruff check kdbook tests
	$(BIN)/ruff format --check kdbook tests
	$(BIN)/pytest tests
	rm -rf $(CI_RUN)
	$(BIN)/kdbook book --out $(CI_RUN)
	$(BIN)/pytest --nbval-lax --nbval-current-env -p no:cacheprovider $(CI_RUN)/*.ipynb

lab: $(STAMP)
	$(BIN)/jupyter lab notebooks/ $(if $(filter 0,$(shell id -u)),--allow-root)

clean:
	rm -rf runs/
