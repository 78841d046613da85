# The two commands of the README: `make run` and `make test`. Everything they need is installed here.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
# Quiet set-up: one line per step, so the server's URL and first password are the last lines of `make run`.
PIP := PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore $(BIN)/pip --quiet --quiet
# Where `make run` listens: AIHUB_HOST / AIHUB_PORT (read by the server itself, as documented); HOST / PORT
# are accepted too, as make variables or from the environment, and win when given.
SERVE_ARGS := $(if $(HOST),--host $(HOST)) $(if $(PORT),--port $(PORT))

LOCALE_DIR := aihub/web/locale
# Our modules byte-compiled (only those changed since): a Python told not to write bytecode (PYTHONDONTWRITEBYTECODE,
# set on some hosts and in many images) would otherwise compile each of them again in every process it starts,
# a quarter of `aihub run`'s start (docs/benchmarks.md, "CLI start-up").
COMPILE := $(BIN)/python -m compileall -q aihub
# The message catalogues (.mo, not kept in git): made from their .po at set-up, and again whenever a .po is newer,
# so a translation edited in a checkout shows at the next `make run` / `make test` (the set-up's stamp follows
# pyproject.toml only).
CATALOGS := $(patsubst %.po,%.mo,$(wildcard $(LOCALE_DIR)/*/LC_MESSAGES/messages.po))

.PHONY: run test install install-test lint format bench clean image i18n-extract i18n-update i18n-compile

$(BIN)/python:
	@echo "==> creating $(VENV) with $(PYTHON)"
	@$(PYTHON) -m venv $(VENV)
	@$(PIP) install --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	@echo "==> installing aihub and its dependencies into $(VENV)"
	@$(PIP) install -e .
	@$(BIN)/pybabel -q compile --use-fuzzy -d $(LOCALE_DIR)
	@touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	@echo "==> installing aihub with its test dependencies into $(VENV)"
	@$(PIP) install -e '.[test]'
	@$(BIN)/pybabel -q compile --use-fuzzy -d $(LOCALE_DIR)
	@bash scripts/ensure-test-deps.sh
	@touch $(VENV)/.installed $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

run: install $(CATALOGS)
	@$(COMPILE)
	@echo "==> starting the server (it migrates the database first)"
	@$(BIN)/aihub serve $(SERVE_ARGS)

test: install-test $(CATALOGS)
	@$(COMPILE)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest $(PYTEST_ARGS)

$(LOCALE_DIR)/%/LC_MESSAGES/messages.mo: $(LOCALE_DIR)/%/LC_MESSAGES/messages.po | $(VENV)/.installed
	@$(BIN)/pybabel -q compile --use-fuzzy -d $(LOCALE_DIR) -l $*

# The platform's image (Containerfile; docs/image.md): podman, else docker. IMAGE_BUILD_ARGS adds options, e.g.
# IMAGE_BUILD_ARGS="--build-arg BASE_IMAGE=..." (the tests build it FROM a base made offline).
CONTAINER_ENGINE ?= $(shell command -v podman || command -v docker)
IMAGE ?= aihub-workflow:$(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
IMAGE_BUILD_ARGS ?=

image:
	@test -n "$(CONTAINER_ENGINE)" || { echo "make image needs podman or docker" >&2; exit 2; }
	$(CONTAINER_ENGINE) build $(IMAGE_BUILD_ARGS) -t $(IMAGE) -f Containerfile .

lint: install-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install-test
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: install-test
	$(BIN)/python bench/engine.py

# The UI's message catalogues (docs/ui.md, "Languages"): extract the messages of the templates and the Python
# code into messages.pot, merge it into every language's .po, compile the .po files to .mo.
i18n-extract: install
	$(BIN)/pybabel extract -F babel.cfg -k msg -k N_ -k NC_:1c,2 --no-location --sort-output \
		--project "AIHub Workflow" -o $(LOCALE_DIR)/messages.pot .

i18n-update: i18n-extract
	$(BIN)/pybabel update -i $(LOCALE_DIR)/messages.pot -d $(LOCALE_DIR) --no-fuzzy-matching --ignore-obsolete

i18n-compile: install
	$(BIN)/pybabel compile --use-fuzzy -d $(LOCALE_DIR) --statistics

clean:
	rm -rf $(VENV) .aihub .pytest_cache
