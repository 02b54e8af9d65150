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
# What setup.py's build decision reads besides the machine; a change rebuilds densenets._C.
BUILD_ENV := FORCE_CUDA=$(FORCE_CUDA) TORCH_CUDA_ARCH_LIST=$(TORCH_CUDA_ARCH_LIST) CUDA_HOME=$(CUDA_HOME)

.PHONY: install test test-slow test-cuda demo lint bench clean FORCE

$(PY):
	python3 -m venv $(VENV)

# Requirements: torch/torchvision first (the newest matching pair), then the rest.
$(STAMP)-deps: requirements.txt | $(PY)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	@touch $@

# Rewritten (so newer) only when BUILD_ENV differs from the last build's.
$(STAMP)-env: FORCE | $(PY)
	@[ "$$(cat $@ 2>/dev/null)" == '$(BUILD_ENV)' ] || echo '$(BUILD_ENV)' > $@

# The package, editable, built against the installed torch (compiles densenets._C).
# pip -q hides setup.py's output, so its one-line build decision is printed first.
$(STAMP)-build: $(STAMP)-deps $(STAMP)-env setup.py $(CSRC)
	@$(PY) setup.py --build-plan
	$(PY) -m pip install -q --no-build-isolation --no-deps -e .
	@touch $@

install: $(STAMP)-build

# pytest's exit code 5 means it collected no tests: a failure, said so.
test: install
	@echo '$(PY) -m pytest -m "not slow" $(PYTEST_ARGS) $(ARGS)'
	@$(PY) -m pytest -m "not slow" $(PYTEST_ARGS) $(ARGS); rc=$$?; \
	  [ $$rc -ne 5 ] || echo "make test: pytest collected no tests (exit code 5)" >&2; exit $$rc

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
	rm -rf build densenets/_C*.so *.egg-info $(STAMP)-build $(STAMP)-env
