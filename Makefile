# Two commands on a fresh machine: `make book` builds the book, `make test` runs everything CI must prove.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
CHAPTERS := $(wildcard book/*.py)
NOTEBOOKS := $(CHAPTERS:.py=.ipynb)
PIP := $(VENV)/bin/pip

.PHONY: book test execute html linkcheck unit clean
.DELETE_ON_ERROR:

$(STAMP): requirements.txt pyproject.toml
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -r requirements.txt
	$(PIP) install -q --no-deps -e .
	$(PIP) check
	touch $@

# Execute each chapter with papermill on CPU (working directory book/), then build with warnings as errors.
book/%.ipynb: book/%.py $(STAMP) $(wildcard lib/llavamech/*.py lib/llavamech/*/*.py data/reference/*.csv)
	$(VENV)/bin/jupytext --to ipynb --output $@.src.ipynb $<
	cd book && TQDM_DISABLE=1 ../$(VENV)/bin/papermill --cwd . -k python3 $(notdir $@).src.ipynb $(notdir $@) --log-level ERROR
	$(PY) -m llavamech.report $@   # stable cell ids, no timestamps: an unchanged rebuild leaves git clean
	rm -f $@.src.ipynb

execute: $(NOTEBOOKS)

html: execute
	rm -rf _build/html
	$(VENV)/bin/jupyter-book build . -W -n --keep-going

book: html
	@echo "book built: _build/html/index.html"

linkcheck: html
	rm -rf /tmp/llavamech-html && cp -r _build/html /tmp/llavamech-html && chmod -R a+rX /tmp/llavamech-html
	$(VENV)/bin/linkchecker --no-status --ignore-url '^https?://' /tmp/llavamech-html/index.html

unit: $(STAMP)
	$(PY) -m pytest tests/unit tests/cli tests/organism tests/gpu -rs   # tests/gpu: skipped, with the reason, without a GPU

test: $(STAMP)
	$(PY) -m pytest tests/unit tests/cli tests/organism tests/gpu -rs   # tests/gpu: skipped, with the reason, without a GPU
	touch $(CHAPTERS)   # re-execute every chapter: tests/book compares the fresh outputs with the committed ones
	$(MAKE) --no-print-directory execute
	$(MAKE) --no-print-directory html linkcheck
	$(PY) -m pytest tests/book

clean:
	rm -rf _build $(VENV)
