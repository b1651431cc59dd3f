# One-command set-up, demo and tests. `make demo` and `make test` create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# CPU build of torch; on a GPU machine install your CUDA torch into $(VENV) first and it is kept.
TORCH ?= torch==2.13.0
QUERY ?= How do I make bread at home?

.PHONY: setup demo test clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e '.[dev,onnx,distributed]'
	touch $@

demo: setup
	$(BIN)/simsearch index build examples/corpus.txt -o build/demo-index --overwrite
	$(BIN)/simsearch query build/demo-index "$(QUERY)" -k 3

test: setup
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) build .pytest_cache *.egg-info
