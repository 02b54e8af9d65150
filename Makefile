# densenets: `make test` and `make demo` install what is missing first, then run.
# Uses the active virtualenv if there is one, else creates ./.venv.
SHELL := /bin/bash
VENV ?= .venv
ifdef VIRTUAL_ENV
PY ?= $(VIRTUAL_ENV)/bin/python
else
PY ?= $(VENV)/bin/python
endif
TASK ?= detection
PYTEST_ARGS ?= -n 2
STAMP := $(dir $(PY)).densenets
CSRC := $(shell find densenets/ops/csrc -type f 2>/dev/null)

.PHONY: install test test-slow test-cuda demo lint bench clean

$(PY):
	python3 -m venv $(VENV)

# Requirements: torch/torchvision first (the newest matching pair), then the rest.
$(STAMP)-deps: requirements.txt | $(PY)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	@touch $@

# The package, editable, built against the installed torch (compiles densenets._C).
$(STAMP)-build: $(STAMP)-deps setup.py $(CSRC)
	$(PY) -m pip install -q --no-build-isolation --no-deps -e .
	@touch $@

install: $(STAMP)-build

test: install
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS) $(ARGS)

test-slow: install
	$(PY) -m pytest -m slow $(ARGS)

demo: install
	$(PY) tools/demo.py --task $(TASK) $(ARGS)

lint: install
	$(PY) -m ruff check densenets tools tests benchmarks datasets

bench: install
	$(PY) benchmarks/bench_deform_conv.py
	$(PY) benchmarks/bench_detection.py

clean:
	rm -rf build densenets/_C*.so *.egg-info $(STAMP)-build
