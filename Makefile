# vizkit: `make demo`, `make test`. Everything runs offline (no model hub at runtime).
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export MPLBACKEND := Agg

SHELL  := /bin/bash
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: .venv install lint format test test-fast coverage ui-test docs mutation mutation-clean demo sync-notebooks bench clean distclean

# ---------------------------------------------------------------- environment
# The stamp is newer than pyproject.toml once the venv is installed: re-runs are no-ops.
.venv install: $(STAMP)

$(PY):
	$(PYTHON) -m venv $(VENV)

# papermill and nbval start the kernel named "python3": register it inside the venv
# (--sys-prefix), pointing at the venv's interpreter.
# Quantus (tests/math/test_quantus.py compares vizkit's metrics with it) is installed without its
# dependencies: it requires opencv-python, which would replace our opencv-python-headless (the same
# cv2 module), and cachetools, which only its TensorFlow wrapper imports; it needs nothing else new.
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e ".[notebooks,test,vlm,docs]"
	$(PY) -m pip install --no-deps quantus==0.6.0
	$(PY) -m ipykernel install --sys-prefix --name python3
	touch $(STAMP)

# ---------------------------------------------------------------- lint
# ruff (pyproject.toml [tool.ruff]: line length 120) over the package, the tests, the benchmarks and
# the notebooks' jupytext pairs and the docs' Python (conf, generators); `make format` rewrites them (then
# `make sync-notebooks`)
LINTED := vizkit tests benchmarks docs tools notebooks/*.py
lint: install
	$(VENV)/bin/ruff check $(LINTED)
	$(VENV)/bin/ruff format --check $(LINTED)

format: install
	$(VENV)/bin/ruff check --fix $(LINTED)
	$(VENV)/bin/ruff format $(LINTED)

# ---------------------------------------------------------------- tests
# the unit tests alone, without the slow real-component tests (Dask clusters, papermill kernels,
# VLM generation, subprocess CLIs, browser: tests/conftest.py marks them `slow`)
test-fast: install
	$(PY) -m pytest -q tests --ignore=tests/ui -m "not slow"

# branch coverage of vizkit/ ([tool.coverage] in pyproject.toml): the 15 least covered modules, the
# total (statements and branches) and the branches alone; `.venv/bin/coverage report` lists every module
# (the test suite under coverage, without nbval, docs and the browser: make test runs them without it)
coverage: install
	@mkdir -p runs
	$(PY) -m pytest -q tests --ignore=tests/ui --cov=vizkit --cov-branch --cov-report=
	@$(PY) -m coverage report --sort=cover | sed -n '1,17p;/^TOTAL/p'
	@$(PY) tools/branch_coverage.py "unit and slow tests"

# the unit tests on two pytest-xdist workers (they are independent of each other) under branch coverage of vizkit/
# (its total printed; `make coverage` adds the slow tests), then the slow
# real-component tests one at a time (Dask clusters, kernels and timed interrupts share the machine)
test: install lint
	@mkdir -p runs
	$(PY) -m pytest -q -n 2 tests --ignore=tests/ui -m "not slow" --cov=vizkit --cov-branch --cov-report=
	@$(PY) tools/branch_coverage.py "unit tests"
	$(PY) -m pytest -q tests --ignore=tests/ui -m slow
	$(MAKE) docs
	@if ls notebooks/*.ipynb >/dev/null 2>&1; then \
		sanitize=""; \
		if [ -f notebooks/sanitize.cfg ]; then sanitize="--nbval-sanitize-with notebooks/sanitize.cfg"; fi; \
		echo "$(PY) -m pytest -q --nbval-lax --nbval-kernel-name python3 $$sanitize notebooks/"; \
		$(PY) -m pytest -q --nbval-lax --nbval-kernel-name python3 $$sanitize notebooks/; \
	else \
		echo "no notebooks/*.ipynb yet: skipping the notebook tests"; \
	fi
	$(MAKE) ui-test

# The notebooks in JupyterLab, in Debian's Chromium driven by playwright (no browser download:
# playwright's own fetch cannot work offline). Chromium comes from apt when it is missing.
CHROMIUM ?= /usr/bin/chromium
ui-test: install docs
	@if [ ! -x "$(CHROMIUM)" ]; then \
		echo "installing Debian's chromium (apt-get install -y chromium)"; \
		SUDO=""; if [ "$$(id -u)" != 0 ]; then SUDO=sudo; fi; \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium; \
	fi
	VIZKIT_CHROMIUM=$(CHROMIUM) $(PY) -m pytest -q -s tests/ui

# ---------------------------------------------------------------- documentation
# The offline site (Sphinx + MyST-NB + PyData theme; CONTRIBUTING.md says why) in docs/_build/html/: a fresh
# build with warnings as errors, then the internal link check (docs/build.py). Rebuilt only when a source is
# newer than the last good build: the pages, the package (docstrings, CLI parsers, scenario registry), the
# notebooks (shown with their committed outputs), the zoo's configs and cards, the included Markdown files.
DOCS_SITE    := docs/_build/html
DOCS_SOURCES := $(shell find docs -path docs/_build -prune -o -type f \( -name '*.md' -o -name '*.py' -o -name '*.css' \
	-o -name '*.png' \) -print) $(shell find vizkit -name '*.py') $(wildcard notebooks/*.ipynb notebooks/*.py) \
	$(wildcard data/zoo/*/config.json data/zoo/cards/*) CHANGELOG.md CONTRIBUTING.md benchmarks/README.md pyproject.toml
docs: install $(DOCS_SITE)/index.html

$(DOCS_SITE)/index.html: $(STAMP) $(filter-out docs/reference/api/% docs/reference/cli.md docs/reference/parameters.md \
		docs/reference/zoo.md docs/_generated/%,$(DOCS_SOURCES))
	@start=$$(date +%s); $(PY) docs/build.py $(DOCS_SITE) && echo "make docs: $$(( $$(date +%s) - start )) s"

# ---------------------------------------------------------------- mutation testing
# mutmut over the modules that compute answers, each mutant against the fast unit tests that call the
# mutated function ([tool.mutmut] in pyproject.toml), then the score per module (tools/mutation_score.py,
# equivalent mutants listed in docs/development/mutation.md). Not part of `make test` or CI: ~45 minutes on 2 idle cores (see
# CONTRIBUTING.md). Results are kept in mutants/ (git-ignored): a re-run retests only the functions that
# changed; `make mutation-clean` starts over.
MUTATION_CHILDREN ?= 2
mutation: install
	OMP_NUM_THREADS=1 VIZKIT_DATA=$(CURDIR)/data $(VENV)/bin/mutmut run --max-children $(MUTATION_CHILDREN)
	$(PY) tools/mutation_score.py --fail-under 90

mutation-clean:
	rm -rf mutants

# ---------------------------------------------------------------- demo
# Every run writes into a new runs/<timestamp>/ directory.
demo: install
	@set -euo pipefail; \
	ts=$$(date +%Y%m%d-%H%M%S); out=runs/$$ts; n=1; \
	while [ -e "$$out" ]; do out=runs/$$ts-$$n; n=$$((n + 1)); done; \
	mkdir -p "$$out"; \
	if ls notebooks/*.ipynb >/dev/null 2>&1; then \
		$(PY) -m vizkit.demo --output-dir "$$out" --notebooks notebooks/*.ipynb; \
		echo "executed notebooks and their outputs are in $(CURDIR)/$$out/"; \
	else \
		$(PY) -m vizkit.demo --output-dir "$$out"; \
		echo "demo outputs are in $(CURDIR)/$$out/"; \
	fi

# ---------------------------------------------------------------- notebooks
# notebooks/NN_<stem>.ipynb and NN_<stem>.py are jupytext pairs (notebooks/jupytext.toml): after editing
# either one, bring the other up to date (the newer file's cells win; the .ipynb keeps its outputs).
sync-notebooks: install
	$(VENV)/bin/jupytext --sync notebooks/*.ipynb

# ---------------------------------------------------------------- benchmarks
bench: install
	$(PY) benchmarks/bench_cam.py

# ---------------------------------------------------------------- cleaning
clean:
	rm -rf runs docs/_build
	find . -path ./$(VENV) -prune -o -type d \
		\( -name __pycache__ -o -name .pytest_cache -o -name .ipynb_checkpoints \) -print0 \
		| xargs -0 rm -rf

distclean: clean
	rm -rf $(VENV)
