# The two commands of the README:
#   make serve   build the default knowledge base and serve it in Datasette (http://127.0.0.1:8001)
#   make test    run the test suite (.ci/run calls exactly this)
# Both create ./.venv and install kb into it on first use.
# make serve takes PORT= and HOST= (make serve PORT=8002; PORT=0 picks a free port), and DB= / DATA= for
# another database or data directory (passed as kb serve --db / --data; a path given must exist).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8001
DB ?=
DATA ?=

.PHONY: serve test install

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml setup.py kb/parse/_pubmed_fields.pyx
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@

serve: install
	$(BIN)/kb serve --host '$(HOST)' --port '$(PORT)' $(if $(DB),--db '$(DB)') $(if $(DATA),--data '$(DATA)')

test: install
	bash scripts/ensure-chromium
	$(BIN)/python -m pytest
