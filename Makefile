# kdbook: every target sets up .venv itself, so a fresh clone needs one command.
#   make book   execute the notebooks into runs/<timestamp>/ (OUT=DIR to choose the folder)
#   make test   lint, unit tests (the browser test included), the book by papermill, nbval
#   make lab    JupyterLab on notebooks/
#   make bench  time the sources' training loop against kdbook's (ARGS=... for more options)
#   make html   render a run folder as a static HTML book again (RUN=DIR; make book does it)
#   make clean  remove runs/ (and notebooks/runs/, where make lab's notebooks keep their run)

SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help
.DELETE_ON_ERROR:

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CI_RUN := runs/ci

.PHONY: help venv book test lab bench html clean

help:
	@echo "make book   execute the notebooks into runs/<timestamp>/ (make book OUT=runs/mine)"
	@echo "make test   lint, unit and browser tests, the book by papermill, nbval on the executed copies"
	@echo "make lab    open the notebooks in JupyterLab"
	@echo "make bench  the sources' training loop against kdbook's: images/s, memory, ratio (-> runs/bench.json)"
	@echo "make html   render a run folder as HTML again: make html RUN=runs/ci (-> RUN/html/)"
	@echo "make clean  remove runs/ and notebooks/runs/"

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
	@# The unit tests and the book side by side (each mostly one thread), and nbval on each
	@# executed notebook as soon as the book has finished it and a core is free.
	$(BIN)/python tests/make_test.py $(CI_RUN)

lab: $(STAMP)
	$(BIN)/jupyter lab notebooks/ $(if $(filter 0,$(shell id -u)),--allow-root)

bench: $(STAMP)
	$(BIN)/kdbook bench --out $(or $(OUT),runs/bench.json) $(ARGS)

html: $(STAMP)
	$(if $(RUN),,$(error make html needs RUN=DIR, the run folder of a `make book`))
	$(BIN)/kdbook html $(RUN)

clean:
	rm -rf runs/ notebooks/runs/
