# Two commands for a newcomer: `make demo` and `make test`.
PY ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: install demo test test-fast lint clean

$(BIN)/vision: pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@touch $@

install: $(BIN)/vision  ## create .venv and install the project (editable) with what it needs

demo: install  ## the whole path on embedded synthetic data: train, register, export, classify
	$(BIN)/vision demo

test: install  ## the whole test suite (real data tests run when VISION_DATA_DIR has it)
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || test -n "$$CHROMIUM" || echo "make test: Chromium not found, so the review app's browser tests will be skipped: install it (sudo apt-get install chromium) or set CHROMIUM=/path/to/chromium"
	$(BIN)/python -m pytest -q -ra $(PYTEST_ARGS)

test-fast: install  ## skip the slow tier
	$(BIN)/python -m pytest -q -m "not slow" $(PYTEST_ARGS)

lint: install  ## ruff and mypy on the packages
	$(BIN)/ruff check vision training inference review tests bench
	$(BIN)/mypy vision training inference review

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
