# Two commands a newcomer needs: `make demo` and `make test`. Both set up .venv first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN     = $(VENV)/bin

.PHONY: setup demo ui test lint clean-data

$(BIN)/rof: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip setuptools wheel
	$(BIN)/pip install -q -e '.[dev]'
	touch $(BIN)/rof

setup: $(BIN)/rof

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
