# sparsegap: two commands do everything.
#   make book   run every notebook (cpu profile) with papermill and build the HTML book
#   make test   run every test (unit, notebooks at smoke scale, the built book in headless Chromium)
#   make bench  benchmarks that print speed ratios against a baseline measured in the same run
#
# The virtual environment lives outside the checkout, keyed by the pinned torch pair and the Python
# version, so that a fresh clone (CI) reuses the 5.5 GB of torch instead of copying it again.
# The project's own dependencies are then installed into it incrementally: a stamp keyed by
# pkg/pyproject.toml decides whether `pip install -e` must run again. Because several checkouts may
# share the venv, every command puts this checkout's pkg/ first on PYTHONPATH (kernels inherit it),
# so each checkout always runs its own code, whichever one installed the package last.

SHELL := /bin/bash
PYTHON ?= python3
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
PYVER := $(shell $(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])')
VENV_KEY := $(shell echo "$(TORCH_PINS) py$(PYVER)" | sha1sum | cut -c1-10)
VENV ?= $(HOME)/.cache/sparsegap/venv-$(VENV_KEY)
PY := $(VENV)/bin/python
DEPS_KEY := $(shell cat pkg/pyproject.toml | sha1sum | cut -c1-10)
DEPS_STAMP := $(VENV)/.deps-$(DEPS_KEY)
# Debian packages: what building the book needs (Fashion-MNIST), and what only the tests need (Chromium and its
# driver, for the browser tests of the built book). Ubuntu packages Chromium differently (a snap behind
# chromium-browser, the driver as chromium-chromedriver): set TEST_APT_PACKAGES there.
BOOK_APT_PACKAGES := dataset-fashion-mnist
TEST_APT_PACKAGES ?= chromium chromium-driver
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
export MPLBACKEND := Agg
export PYTHONPATH := $(CURDIR)/pkg$(if $(PYTHONPATH),:$(PYTHONPATH))

.PHONY: book test bench robustness env venv-path system system-test widgets clean-book help

help:
	@echo "make book   build the book (cpu profile) into book/_build/html"
	@echo "make test   run every test"
	@echo "make bench  run the benchmarks"
	@echo "make robustness  every verdict again on a disjoint seed set (ARGS=\"--only NAME -j 2 ...\")"

$(VENV)/.torch-ok:
	@mkdir -p $(dir $(VENV))
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade "pip>=23"
	$(VENV)/bin/pip install --quiet $(TORCH_PINS)
	touch $@

$(DEPS_STAMP): $(VENV)/.torch-ok pkg/pyproject.toml
	$(VENV)/bin/pip install --quiet -e "pkg[book,test,bench,dask]" $(TORCH_PINS)
	$(PY) -m ipykernel install --sys-prefix --name python3 > /dev/null
	rm -f $(VENV)/.deps-*
	touch $@

env: $(DEPS_STAMP)

# The venv's folder, for whatever keeps it between machines (the book workflow caches it).
venv-path:
	@echo $(VENV)

# Debian packages, installed only when missing: `system` what the book needs, `system-test` also what the tests need.
define apt_install
	@missing=""; for p in $(1); do dpkg -s $$p > /dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing > /dev/null; \
	fi
endef

system:
	$(call apt_install,$(BOOK_APT_PACKAGES))

system-test:
	$(call apt_install,$(BOOK_APT_PACKAGES) $(TEST_APT_PACKAGES))

# ipywidgets' embed scripts, served by the book itself so that widgets render offline.
widgets: env
	bash book/_scripts/fetch_widget_js.sh

# REPOSITORY_URL (e.g. https://github.com/OWNER/REPO) points the pages' repository buttons at a fork without
# editing book/_config.yml; the workflow sets it from the GitHub context.
book: env system widgets
	$(PY) -m sparsegap.bookbuild --profile cpu$(if $(REPOSITORY_URL), --repository-url "$(REPOSITORY_URL)")

test: env system-test widgets
	$(PY) -m pytest tests -q --durations=15

bench: env system
	$(PY) tests/bench/run.py

# Not part of book or test: re-runs the verdict-bearing chapters with every training seed shifted by 100, into
# data/runs-robustness and data/robustness, and prints each verdict's status on both seed sets (the first from
# book/notebooks, i.e. after `make book`). Options through ARGS, e.g. make robustness ARGS="--only 06_gradient_snr".
robustness: env system
	$(PY) -m sparsegap.robustness $(ARGS)

clean-book:
	rm -rf book/_build book/notebooks
