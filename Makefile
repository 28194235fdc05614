# The project's single entry point. The README's two commands are `make demo` and `make test`;
# each sets up what it needs (apt packages, a virtual environment, pip) and is fast the second time.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
VPY := $(VENV)/bin/python
INKEX_PIP := inkex==1.4.1
# Debian's Inkscape 1.2.2 and its Python (inkex 1.2.0 needs lxml, numpy, cssselect, tinycss2 from apt),
# Xvfb for headless extension runs, pytest for the second test run under Inkscape's Python, and
# Chromium for the web page's Playwright tests (Playwright's own browser download is not used).
APT_TEST_PACKAGES := inkscape xvfb xauth python3-lxml python3-numpy python3-cssselect \
	python3-tinycss2 python3-scour python3-packaging python3-pytest chromium
INKSCAPE_PYTHON ?= /usr/bin/python3
INKSCAPE_EXTENSIONS ?= /usr/share/inkscape/extensions
DEMO_OUT ?= sample-sketch.svg
DEMO_ARGS ?=
# `make install` links the venv's `clipasso` here (a folder most desktop shells put on PATH)
BINDIR ?= $(HOME)/.local/bin

.PHONY: help demo test lint format venv apt-test-deps clean update-extension-refs install gpu-check \
	test-venv test-inkscape12 test-inkscape14

help:
	@echo "make demo   set up, then sketch the bundled sample image into $(DEMO_OUT)"
	@echo "make test   set up (apt packages, venv), then lint and run the whole test suite"
	@echo "make test-inkscape14  the extension tests in a real Inkscape 1.4 (a cached Debian trixie root)"
	@echo "make format format the code with ruff"
	@echo "make install put 'clipasso' on PATH (a link in $(BINDIR) to $(VENV)/bin/clipasso)"
	@echo "make gpu-check on a CUDA machine: tests, benchmarks and a full job, JSON in $(GPU_OUT)"

# --- set-up ----------------------------------------------------------------------------------

# The venv is rebuilt only when pyproject.toml changes (the stamp file records the last install).
$(VENV)/.stamp-install: pyproject.toml
	@if [ ! -x "$(VPY)" ]; then \
		echo "make: creating the virtual environment $(VENV) with $(PYTHON)"; \
		$(PYTHON) -m venv $(VENV) || { echo "make: '$(PYTHON) -m venv' failed; on Debian/Ubuntu: sudo apt-get install python3-venv" >&2; exit 1; }; \
	fi
	$(VPY) -m pip install --quiet --upgrade pip
	$(VPY) -m pip install --quiet -e ".[test]"
	@# inkex's PyGObject requirement needs GTK headers to build and only serves inkex.gui: skip it.
	$(VPY) -m pip install --quiet --no-deps "$(INKEX_PIP)"
	@touch $@

venv: $(VENV)/.stamp-install

apt-test-deps:
	@missing=""; for p in $(APT_TEST_PACKAGES); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "make: installing Debian packages:$$missing"; \
		if [ "$$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null; then SUDO="sudo"; \
		else echo "make: these Debian packages are needed and I am not root (and there is no sudo):$$missing" >&2; \
		     echo "make: run as root: apt-get install -y --no-install-recommends$$missing" >&2; exit 1; fi; \
		$$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q --no-install-recommends $$missing; \
	fi

# --- the two README commands -----------------------------------------------------------------

# bench/gpu_check.sh: every GPU figure in one go (under 8 minutes); says so without CUDA
GPU_OUT ?= bench/results/gpu-check
gpu-check: venv
	PYTHON=$(VENV)/bin/python bench/gpu_check.sh $(GPU_OUT)

demo: venv
	$(VENV)/bin/clipasso sketch sample -o $(DEMO_OUT) $(DEMO_ARGS)
	@echo "make: wrote $(DEMO_OUT): open it in Inkscape (one layer per abstraction level)"

# Every stage runs even when an earlier one failed (so one run shows every failure); make's exit
# status is still a failure if any failed. After the venv stage the venv is not remade by each
# later stage (-o): when the venv stage failed, they run with what there is.
TEST_STAGES := apt-test-deps venv lint test-venv test-inkscape12 test-inkscape14
test:
	@failed=""; keep=""; for stage in $(TEST_STAGES); do \
		echo "== make $$stage =="; \
		$(MAKE) --no-print-directory $$keep $$stage || failed="$$failed $$stage"; \
		if [ "$$stage" = venv ]; then keep="-o $(VENV)/.stamp-install"; fi; \
	done; \
	if [ -n "$$failed" ]; then echo "make test: these stages failed:$$failed" >&2; exit 1; fi; \
	echo "make test: every stage passed"

# pytest in the venv: torch, open_clip, PyPI inkex, the real Inkscape 1.2 end to end
test-venv: venv
	@echo "== pytest (venv: torch, open_clip, inkex $(INKEX_PIP)) =="
	$(VENV)/bin/python -m pytest

# the extension's tests again under Inkscape 1.2's own Python with its bundled inkex 1.2.0
test-inkscape12: venv
	@echo "== pytest (Inkscape's Python $(INKSCAPE_PYTHON) with its bundled inkex) =="
	cd tests/extension && CLIPASSO_PYTHON=$(abspath $(VPY)) PYTHONPATH=$(abspath .):$(INKSCAPE_EXTENSIONS) \
		$(INKSCAPE_PYTHON) -m pytest -p no:cacheprovider -c /dev/null --rootdir=. .

# and under a real Inkscape 1.4 (Debian trixie's, in a root built once and cached; see
# tests/inkscape14/run.sh): says so in one line where it cannot run, except in CI
test-inkscape14: venv
	@echo "== pytest (Inkscape 1.4 in a Debian trixie root, its Python and bundled inkex) =="
	CLIPASSO_PYTHON=$(abspath $(VPY)) tests/inkscape14/run.sh

# The extension's whole-document comparisons (tests/extension/test_comparison.py): rewrite the
# stored outputs under tests/extension/data/refs/ after an intended change, then check them
# (inkex's overwrite mode reports every file it rewrote as a failure, hence the second run).
update-extension-refs: venv
	EXPORT_COMPARE=3 $(VPY) -m pytest -q tests/extension/test_comparison.py >/dev/null || true
	$(VPY) -m pytest -q tests/extension/test_comparison.py
	@echo "make: rewrote tests/extension/data/refs/; review the diff (git diff tests/extension/data/refs)"

# A link, not a second install: the venv already holds the several GB of PyTorch.
install: venv
	@link="$(BINDIR)/clipasso"; target="$(abspath $(VENV))/bin/clipasso"; \
	if [ -e "$$link" ] && [ ! -L "$$link" ]; then \
		echo "make: $$link exists and is not a link; remove it first" >&2; exit 1; fi; \
	mkdir -p "$(BINDIR)" && ln -sfn "$$target" "$$link"; \
	echo "make: $$link -> $$target"; \
	case ":$$PATH:" in *":$(BINDIR):"*) ;; \
	*) echo "make: $(BINDIR) is not on your PATH: add  export PATH=\"$(BINDIR):\$$PATH\"  to ~/.profile";; esac

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: venv
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .ruff_cache
