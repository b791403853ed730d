# Two entry points for a fresh machine: `make demo` and `make test`. Both install into .venv when needed.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup test test-fast demo clean-venv

setup:
	@VENV=$(VENV) scripts/setup_venv.sh

test: setup
	$(PY) -m pytest -q -rs --durations=15 $(PYTEST_ARGS)

# everything except the tests that start vLLM servers
test-fast: setup
	$(PY) -m pytest -q -rs -m "not vllm" $(PYTEST_ARGS)

demo: setup
	$(PY) -m vseam.demo

clean-venv:
	rm -rf $(VENV)
