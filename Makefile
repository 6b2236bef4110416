# The two quickstart commands: `make demo` and `make test`. Both set up .venv from the lock file first.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup demo test validate clean

$(BIN)/popbase: pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check uv
	# --compile-bytecode: the .pyc files are written once here, so that a run does not compile Dagster's and
	# GX's sources each time where the environment forbids writing them (PYTHONDONTWRITEBYTECODE): ~9 s a date
	$(BIN)/uv pip install -q --compile-bytecode --python $(BIN)/python -r requirements.lock
	$(BIN)/uv pip install -q --python $(BIN)/python --no-deps -e .
	touch $(BIN)/popbase

setup: $(BIN)/popbase

demo: setup
	GX_ANALYTICS_ENABLED=False $(BIN)/popbase demo

test: setup
	$(BIN)/ruff check .
	GX_ANALYTICS_ENABLED=False $(BIN)/dagster definitions validate -w workspace.yaml
	GX_ANALYTICS_ENABLED=False $(BIN)/python -m pytest -n 2 --durations=10

clean:
	rm -rf popbase_home .pytest_cache
