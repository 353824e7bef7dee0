# Two commands a newcomer needs: `make demo` and `make test`. Both set up .venv first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN     = $(VENV)/bin

LOCK    = requirements.lock

.PHONY: setup demo ui test lint lock clean-data

# Reproducible: every dependency (the project's and the dev extras) at the version in the lock file,
# then the project itself without resolving anything again.
$(BIN)/rof: pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip setuptools wheel
	$(BIN)/pip install -q -r $(LOCK)
	$(BIN)/pip install -q --no-deps -e .
	@$(BIN)/pip check >/dev/null || { $(BIN)/pip check; \
	  echo "$(LOCK) does not satisfy pyproject.toml: run 'make lock'" >&2; exit 1; }
	touch $(BIN)/rof

setup: $(BIN)/rof

# Refresh the lock after changing dependencies in pyproject.toml: pins already in the lock are kept
# where they still fit; `make lock UPGRADE=1` moves everything to the newest allowed versions.
lock:                 ## regenerate requirements.lock from pyproject.toml (project + dev extras)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q pip-tools
	CUSTOM_COMPILE_COMMAND="make lock" $(BIN)/pip-compile -q --extra dev --strip-extras \
	  --no-emit-index-url --no-emit-find-links --no-emit-trusted-host $(if $(UPGRADE),--upgrade) \
	  --output-file $(LOCK) pyproject.toml

demo: setup           ## generate quotes (embedded store) and materialise every asset through Dagster
	@scripts/ensure-local-databases.sh
	$(BIN)/rof demo

ui: setup             ## the Dagster UI on the demo's instance: http://127.0.0.1:3000
	$(BIN)/rof ui

test: setup           ## the whole suite against real PostgreSQL, RabbitMQ and chDB
	$(BIN)/ruff check .
	@$(BIN)/pytest; status=$$?; \
	  if [ $$status -eq 5 ]; then echo "pytest collected no tests: that is a failure" >&2; fi; \
	  exit $$status

lint: setup
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

clean-data:           ## forget generated quotes, frames and the local Dagster instance
	rm -rf data .dagster_home
