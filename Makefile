# The two commands of the README:
#   make serve   build the default knowledge base and serve it in Datasette (http://127.0.0.1:8001)
#   make test    run the test suite (.ci/run calls exactly this)
# Both create ./.venv and install kb into it on first use.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: serve test install

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@

serve: install
	$(BIN)/kb serve

test: install
	bash scripts/ensure-chromium
	$(BIN)/python -m pytest
