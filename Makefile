# The two commands of the README: `make demo` and `make test`. Both set up `.venv` first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: venv demo test bench lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# torch first and pinned: the local CPU build; anything else would pull CUDA packages
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[dashboard,ray,test]"
	touch $(STAMP)

venv: $(STAMP)

demo: venv
	$(BIN)/auditor demo

test: venv
	# headless Chromium for the dashboard's browser test (Debian packages; root on CI, no-op when present)
	@command -v chromedriver >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; } || \
	  echo "chromium-driver missing (not root?): the dashboard browser test will be skipped"
	# the layer contracts of pyproject.toml's [tool.importlinter]
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q -p no:cacheprovider

bench: venv
	# quick by default (minutes on 2 cores); make bench FULL=1 for the full-size problems
	BENCH_FULL=$(if $(FULL),1,0) $(BIN)/python -m benchmarks.run

lint: venv
	$(BIN)/ruff check auditor plugins dashboards migrations tests benchmarks

clean:
	rm -rf $(VENV) .auditor
