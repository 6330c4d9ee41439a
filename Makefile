# Two commands: `make run` (demo on embedded SQLite) and `make test` (the whole suite).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test install lint format clean

$(BIN)/cobrabot: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

install: $(BIN)/cobrabot

run: install  ## venv, install, migrate, demo data, serve on http://127.0.0.1:8000 (SQLite)
	$(BIN)/cobrabot serve --demo --host $(HOST) --port $(PORT)

# SQLite always; PostgreSQL too when COBRABOT_TEST_DATABASE_URL is set (CI sets it). The long fuzz run
# (COBRABOT_FUZZ_EXAMPLES) goes against PostgreSQL, the production database; SQLite keeps the short default.
test: install  ## the whole suite
	$(BIN)/ruff check .
	env -u COBRABOT_TEST_DATABASE_URL -u COBRABOT_FUZZ_EXAMPLES $(BIN)/python -m pytest -q
	@if [ -n "$$COBRABOT_TEST_DATABASE_URL" ]; then \
		echo "== again on PostgreSQL ($$COBRABOT_TEST_DATABASE_URL)"; \
		$(BIN)/python -m pytest -q; \
	fi

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) instance .pytest_cache .ruff_cache .hypothesis
