# rlhf-lessons: the commands a newcomer needs.
#
#   make course      set up whatever is missing, then open the course in JupyterLab
#   make test        set up whatever is missing, then run every test and execute every notebook
#   make setup       only the setup step: a virtual environment in .venv with the course installed
#   make notebooks   re-execute every notebook in place, refreshing the outputs that are committed
#   make times       time every lesson as a learner runs it (the README table's second column)
#
# Setup needs Python 3.10 or newer as `python3` (or say which: make course PYTHON=python3.11).
# It installs torch first, at the version pinned in constraints.txt, then the course with the
# tested versions of everything else. A second run is instant; it runs again when pyproject.toml
# or constraints.txt change. To start over: rm -rf .venv
#
# Which torch: pip picks the platform's default build of the pinned release (on Linux that is a
# CUDA build of several GB). To choose another build, create .venv and put your torch in it first,
# e.g. a CUDA build matching your GPU or PyTorch's CPU-only build on a Linux laptop without one:
#   python3 -m venv .venv && .venv/bin/pip install torch --index-url <the index from PyTorch's install page>
# setup keeps a torch it finds in .venv. Or pass pip options for the torch step:
#   make setup TORCH_PIP_ARGS="--index-url <index>"

SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.rlhf-lessons-setup
TORCH_PIN := $(shell sed -n 's/^\(torch==[^ ;]*\).*/\1/p' constraints.txt)
TORCH_PIP_ARGS ?=
JUPYTER_ARGS ?=
CHROMIUM := /usr/bin/chromium
PYTEST_ARGS ?=
# Tests and notebook refreshes write into this fresh folder, never into the learner's own workspace.
TEST_HOME := $(CURDIR)/.ci-workspace
NOTEBOOKS := $(sort $(wildcard notebooks/*.ipynb))
NBVAL_ARGS := --nbval --nbval-current-env --nbval-cell-timeout=600 \
	$(if $(wildcard notebooks/nbval_sanitize.cfg),--nbval-sanitize-with notebooks/nbval_sanitize.cfg)

.DEFAULT_GOAL := help
.PHONY: help course test setup notebooks times chromium screenshots

help:
	@sed -n '3,6s/^# *//p' $(firstword $(MAKEFILE_LIST))

course: setup
	$(VENV)/bin/jupyter lab notebooks/00_welcome.ipynb $(if $(filter 0,$(shell id -u)),--allow-root) $(JUPYTER_ARGS)

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@command -v $(PYTHON) >/dev/null 2>&1 || { \
	  echo "error: '$(PYTHON)' not found. Install Python 3.10 or newer, or name it: make $(MAKECMDGOALS) PYTHON=python3.11" >&2; exit 1; }
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 10))' || { \
	  echo "error: the course needs Python 3.10 or newer; '$(PYTHON)' is $$($(PYTHON) --version 2>&1)." >&2; \
	  echo "       Install a newer Python and name it: make $(MAKECMDGOALS) PYTHON=python3.11" >&2; exit 1; }
	@if [ ! -x $(PY) ]; then \
	  echo "creating the virtual environment $(VENV)"; \
	  $(PYTHON) -m venv $(VENV) || { rm -rf $(VENV); \
	    echo "error: '$(PYTHON) -m venv' failed. On Debian or Ubuntu: sudo apt-get install python3-venv" >&2; exit 1; }; \
	fi
	@$(PY) -c 'import sys; sys.exit(sys.version_info < (3, 10))' || { \
	  echo "error: $(VENV) holds $$($(PY) --version 2>&1); the course needs 3.10 or newer. Remove it (rm -rf $(VENV)) and run again." >&2; exit 1; }
	@# torch first and on its own, so no later step can pull a different (CUDA) build.
	@if $(PY) -c 'import importlib.metadata as m; m.version("torch")' 2>/dev/null; then \
	  echo "keeping torch $$($(PY) -c 'import importlib.metadata as m; print(m.version("torch"))') already in $(VENV)"; \
	else \
	  echo "installing $(TORCH_PIN)"; \
	  $(PIP) install -c constraints.txt $(TORCH_PIP_ARGS) "$(TORCH_PIN)"; \
	fi
	@# The tested versions, except that the torch just found or installed stays as it is.
	@torch_now=$$($(PY) -c 'import importlib.metadata as m; print(m.version("torch"))') && \
	  sed "s/^torch==[^ ;]*/torch==$$torch_now/" constraints.txt > $(VENV)/constraints-local.txt
	$(PIP) install -c $(VENV)/constraints-local.txt -e ".[dev]"
	@touch $@
	@echo "setup done: $(VENV) is ready"

# Debian's Chromium for the browser tests (Playwright drives /usr/bin/chromium; nothing is downloaded
# by Playwright itself). Installed as root when missing; otherwise the browser tests skip.
chromium:
	@if [ -x $(CHROMIUM) ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing Debian's chromium for the browser tests (apt-get)"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -qq && apt-get install -y -qq chromium >/dev/null || true; \
	fi; \
	if [ ! -x $(CHROMIUM) ]; then \
	  echo "note: $(CHROMIUM) is missing, so the browser tests will be skipped."; \
	  echo "      To run them on Debian or Ubuntu: sudo apt-get install chromium"; \
	fi

# Two streams side by side, one CPU thread each (a 2-core machine runs them in about half the time of one
# after the other). Stream 1, in the background: the slow default-settings outcome tests of the yardstick, of
# lesson 06's rater pools and of its unleashed PPO run (minutes each). Stream 2: the fast tests, every notebook
# under nbval (in order, in one fresh workspace, as a learner runs them), then the rest of the slow tests. The
# costly builds both need (the default SFT -> reward model -> PPO run, the rater pools) are made once: stream 1
# builds them first and stream 2 reads them (RLHF_LESSONS_SHARED_RUNS, tests/conftest.py). The two selections are
# complements (SLOW_STREAM_1), so every slow test runs exactly once; --durations in the log shows where each
# stream's time went.
# How strictly the notebooks' outputs are compared depends on the CPU: `course same-floats` says whether this machine
# rounds floats as the one that executed the committed notebooks did (every output compared) or not (every cell
# must run; only cells tagged nbval-check-output are compared, --nbval-lax). See rlhf_lessons/course.py.
# MPLBACKEND=Agg for the tests (no plot windows); the notebooks' kernels must not inherit it: it would replace
# the inline backend that puts plots into the outputs nbval compares. (Exit 5, nothing selected, is fine.)
# With PYTEST_ARGS the tests run as one stream, e.g. make test PYTEST_ARGS="-m 'not slow'" or PYTEST_ARGS=-x.
TEST_THREADS ?= 1
SLOW_STREAM_1 := (test_outcomes or test_rater_bias or test_unleashed_ppo) and not verbose
SLOW := -q -p no:cacheprovider --durations=12 -m 'slow and not open_issue'
test: setup chromium
	@rm -rf $(TEST_HOME) && mkdir -p $(TEST_HOME)
	@export RLHF_LESSONS_THREADS=$(TEST_THREADS) RLHF_LESSONS_SHARED_RUNS=$(TEST_HOME)/shared-runs; \
	ok() { [ $$1 = 0 ] || [ $$1 = 5 ]; }; \
	slow_status=0; \
	if [ -z "$(PYTEST_ARGS)" ]; then \
	  echo "slow outcome tests, stream 1: running in the background, reported at the end ($(TEST_HOME)/slow-tests.log)"; \
	  ( RLHF_LESSONS_HOME=$(TEST_HOME)/slow MPLBACKEND=Agg $(PY) -m pytest $(SLOW) -k '$(SLOW_STREAM_1)' tests \
	      > $(TEST_HOME)/slow-tests.log 2>&1; echo $$? > $(TEST_HOME)/slow-tests.status ) & \
	  slow_pid=$$!; fast_args="-m 'not slow'"; \
	else fast_args="$(PYTEST_ARGS)"; fi; \
	status=0; \
	eval RLHF_LESSONS_HOME=$(TEST_HOME) MPLBACKEND=Agg $(PY) -m pytest -q tests $$fast_args || status=$$?; \
	ok $$status && status=0; \
	if [ -n "$(NOTEBOOKS)" ]; then \
	  floats=0; $(PY) -m rlhf_lessons.course same-floats || floats=$$?; \
	  case $$floats in 0) lax= ;; 3) lax=--nbval-lax ;; *) lax=; status=$$floats ;; esac; \
	  nb=0; eval RLHF_LESSONS_HOME=$(TEST_HOME) env -u MPLBACKEND $(PY) -m pytest -q $(NBVAL_ARGS) $$lax $(PYTEST_ARGS) \
	    $(NOTEBOOKS) || nb=$$?; ok $$nb || status=$$nb; \
	fi; \
	if [ -n "$${slow_pid:-}" ]; then \
	  echo; echo "slow outcome tests, stream 2:"; \
	  rest=0; RLHF_LESSONS_HOME=$(TEST_HOME)/slow2 MPLBACKEND=Agg $(PY) -m pytest $(SLOW) -k 'not ($(SLOW_STREAM_1))' tests \
	    || rest=$$?; ok $$rest || status=$$rest; \
	  wait $$slow_pid; echo; echo "slow outcome tests, stream 1:"; cat $(TEST_HOME)/slow-tests.log; \
	  slow_status=$$(cat $(TEST_HOME)/slow-tests.status); ok $$slow_status || status=$$slow_status; \
	fi; \
	exit $$status

# Re-execute every notebook in order on a fresh workspace, store the new outputs and each lesson's
# measured run time (notebooks/timings.json, shown by lesson 00 and the README), and drop what should
# not be committed: saved widget state and local paths in outputs. See rlhf_lessons/course.py.
notebooks: setup
	@test -n "$(NOTEBOOKS)" || { echo "no notebooks in notebooks/"; exit 1; }
	env -u MPLBACKEND $(PY) -m rlhf_lessons.course refresh

# Time the lessons as a learner runs them (2 threads unless RLHF_LESSONS_THREADS says otherwise), in order on a fresh
# workspace, without saving their outputs: the second column of the README's table of lesson times.
times: setup
	env -u MPLBACKEND $(PY) -m rlhf_lessons.course time

# Screenshots of the widgets for the notebooks' static view (notebooks/images/, see rlhf_lessons/screenshots.py):
# a real JupyterLab in Debian's Chromium. The chat box shows the workspace's models: run the lessons first.
# The thumbs of the rating widget need an emoji font: apt-get install fonts-noto-color-emoji.
screenshots: setup chromium
	env -u MPLBACKEND $(PY) -m rlhf_lessons.screenshots
