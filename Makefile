# llm_lab: every target does its own set-up (idempotent; fast the second time).
#   make test    - set up, then nbdev_test (all notebooks) and pytest (unit, papermill tiny runs, ...)
#   make repro   - set up, then run every paper at the small scale and write runs/small/report.{md,html} (WORKERS=2: two at once)
#   make lab     - set up, then JupyterLab on 127.0.0.1 with the project kernel
#   make export  - notebooks -> llm_lab/ (nbdev_export), then clean notebook metadata
#   make peers   - build the peer libraries' own virtualenvs under .peers/ (parity tests build the one they need)
#   make determinism - run every paper (or PAPERS) twice at tiny and list the non-timing metrics that differ
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
STAMP := $(VENV)/.llm_lab-installed
SCALE ?= small
PAPERS ?=
WORKERS ?= 1
PORT ?= 8888
CORPORA := fortunes fortunes-de fortunes-es fortunes-it fortunes-ru

.PHONY: setup venv corpora browser model test repro lab export clean peers determinism

setup: venv corpora browser model

venv: $(STAMP)

$(STAMP): requirements.txt settings.ini setup.py
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -e .
	@touch $@

corpora:
	@missing=""; \
	for p in $(CORPORA); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if ! command -v apt-get >/dev/null; then \
	  echo "note: apt-get is not available; install the fortunes corpora ($$missing) or set LLM_LAB_FORTUNES_DIR"; exit 0; fi; \
	SUDO=""; [ "$$(id -u)" -eq 0 ] || SUDO=sudo; \
	echo "installing Debian text corpora:$$missing"; \
	$$SUDO apt-get update -qq >/dev/null || true; \
	DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null

# headless Chromium and its driver for the browser tests (report page, JupyterLab UI); skipped with a note without apt-get
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then exit 0; fi; \
	if ! command -v apt-get >/dev/null; then \
	  echo "note: apt-get is not available; install chromium and chromium-driver, or the browser tests are skipped"; exit 0; fi; \
	SUDO=""; [ "$$(id -u)" -eq 0 ] || SUDO=sudo; \
	echo "installing Debian's chromium and chromium-driver (browser tests)"; \
	$$SUDO apt-get update -qq >/dev/null || true; \
	DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium chromium-driver >/dev/null

model: venv
	@$(BIN)/llm-lab fetch-model >/dev/null

# nbdev_test runs the library notebooks (0x, 9x); the paper notebooks (1x-8x) run whole, inline tests included,
# under papermill at the tiny scale in tests/test_repro.py, so they are not run twice.
test: setup
	$(BIN)/nbdev_test --do_print --skip_file_re '^([_.]|[1-8](0[1-9]|[1-9][0-9]))'
	$(BIN)/pytest -q --durations=15 tests

repro: setup
	$(BIN)/llm-lab repro --scale $(SCALE) $(if $(PAPERS),--papers $(PAPERS)) --workers $(WORKERS) $(if $(MODEL),--model $(MODEL)) $(if $(EXECUTOR),--executor $(EXECUTOR)) $(ARGS)

determinism: setup
	-$(BIN)/llm-lab repro --scale tiny --run-name determinism-a --force --workers $(WORKERS) $(if $(PAPERS),--papers $(PAPERS))
	-$(BIN)/llm-lab repro --scale tiny --run-name determinism-b --force --workers $(WORKERS) $(if $(PAPERS),--papers $(PAPERS))
	$(BIN)/llm-lab compare determinism-a determinism-b

lab: setup
	$(BIN)/jupyter lab --ip 127.0.0.1 --port $(PORT) --no-browser --allow-root --notebook-dir .

export: venv
	$(BIN)/nbdev_export
	$(BIN)/nbdev_clean

peers: venv
	$(PY) -c "from llm_lab.peers import build_all; build_all()"

clean:
	rm -rf runs _proc .pytest_cache
