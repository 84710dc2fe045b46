# Two commands on a fresh machine: `make run` (set up, ingest corpus/, start the chat) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PORT ?= 8501

.PHONY: setup run ingest test eval eval-peers bench clean

setup: $(STAMP)

# torch first and pinned: a CPU build lies on disk here, an unpinned one pulls a multi-GB CUDA build.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

ingest: setup
	$(BIN)/rag ingest corpus

run: ingest
	$(BIN)/streamlit run app.py --server.port $(PORT) --server.headless true --browser.gatherUsageStats false

test: setup
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python bench/ingest_bench.py

clean:
	rm -rf $(VENV) data
