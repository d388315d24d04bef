# Two commands on a fresh machine: `make book` builds the book, `make test` runs everything CI must prove.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
CHAPTERS := $(wildcard book/*.py)
NOTEBOOKS := $(CHAPTERS:.py=.ipynb)
PIP := $(VENV)/bin/pip

.PHONY: book test execute html linkcheck unit gpu-test gpu-emulated bench-7b clean
.DELETE_ON_ERROR:

$(STAMP): requirements.txt pyproject.toml
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -r requirements.txt
	$(PIP) install -q --no-deps -e .
	$(PIP) check
	touch $@

# Execute each chapter with papermill on CPU (working directory book/) into _build/executed/, then settle it onto
# book/NAME.ipynb: the committed notebook stays when the fresh execution agrees with it within the tolerance of
# llavamech.notebooks (so a rebuild on another machine leaves git clean); otherwise the fresh one replaces it.
# Figures are not compared (their pixels follow the last digits): after a change only a figure shows, delete the
# notebook before making it.
# The book executes with a fixed thread count, so a machine's core count does not change its numbers.
EXECUTED := _build/executed
MACHINE := OMP_NUM_THREADS=2 MKL_NUM_THREADS=2
# `make test` executes the chapters as another machine would: one thread, and AVX2 kernels in ATen, oneDNN and
# MKL instead of this CPU's own (AVX-512 and bfloat16 in hardware where it has them). tests/book then compares
# that execution with the committed notebooks, which `make book` made on the native kernels.
OTHER_MACHINE := OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 \
	MKL_ENABLE_INSTRUCTIONS=AVX2
book/%.ipynb: book/%.py $(STAMP) $(wildcard lib/llavamech/*.py lib/llavamech/*/*.py data/reference/*.csv)
	mkdir -p $(EXECUTED)
	$(VENV)/bin/jupytext --to ipynb --output $(EXECUTED)/$*.src.ipynb $<
	cd book && TQDM_DISABLE=1 $(MACHINE) ../$(VENV)/bin/papermill --cwd . -k python3 ../$(EXECUTED)/$*.src.ipynb \
		../$(EXECUTED)/$*.ipynb --log-level ERROR && echo "book/$*: executed in $$SECONDS s"
	rm -f $(EXECUTED)/$*.src.ipynb
	$(PY) -m llavamech.notebooks settle $(EXECUTED)/$*.ipynb $@

execute: $(NOTEBOOKS)

html: execute
	rm -rf _build/html
	$(VENV)/bin/jupyter-book build . -W -n --keep-going

book: html
	@echo "book built: _build/html/index.html"

linkcheck: html
	rm -rf /tmp/llavamech-html && cp -r _build/html /tmp/llavamech-html && chmod -R a+rX /tmp/llavamech-html
	$(VENV)/bin/linkchecker --no-status --ignore-url '^https?://' /tmp/llavamech-html/index.html

UNIT := $(PY) -m pytest tests/unit tests/cli tests/organism tests/gpu -rs   # tests/gpu: skipped, with the reason, without a GPU
unit: $(STAMP)
	$(UNIT)

# The GPU tier on an emulated GPU (tests/gpu/emulated.py): where every tensor lives, checked without a GPU. Not CUDA's
# kernels, numerics, speed or memory: those need `make gpu-test` on one.
EMULATED_GPU := OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 TQDM_DISABLE=1 $(PY) -m pytest tests/gpu tests/unit/test_devices.py \
	-p tests.gpu.emulated -rs
gpu-emulated: $(STAMP)
	$(EMULATED_GPU)

# Two phases, both cores busy in each: first the unit tests beside the emulated GPU tier (one thread each), then the
# chapters two at a time (one thread each). Two chapters side by side run as fast as one alone, and the two test
# suites slow each other little; a test suite beside a chapter's execution ran three to five times slower (measured).
test: $(STAMP)
	touch $(CHAPTERS)   # re-execute every chapter: tests/book compares the fresh outputs with the committed ones
	mkdir -p _build
	$(EMULATED_GPU) > _build/gpu-emulated.log 2>&1 & tier=$$!; \
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(UNIT); unit=$$?; \
	wait $$tier; emulated=$$?; echo "GPU tier on an emulated GPU (_build/gpu-emulated.log):"; \
	tail -n $$([ $$emulated = 0 ] && echo 3 || echo 300) _build/gpu-emulated.log; \
	[ $$unit = 0 ] && [ $$emulated = 0 ]
	$(MAKE) --no-print-directory -j2 execute MACHINE="$(OTHER_MACHINE)"
	$(MAKE) --no-print-directory html linkcheck
	$(PY) -m pytest tests/book

# The GPU tier (every class's identities, every method and `llavamech run` in float32 and bfloat16 on CUDA, CPU
# against GPU, every chapter on CUDA, the 7B-shape bench); it skips, with its reason, without a GPU. On a bare GPU
# machine without network, fetch its wheels elsewhere first: `bash tests/gpu/wheels.sh`.
gpu-test:
	bash tests/gpu/run.sh

bench-7b: $(STAMP)
	$(PY) bench/bench_7b.py

clean:
	rm -rf _build $(VENV)
