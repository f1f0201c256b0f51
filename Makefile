# evalkit: every target installs what it needs into .venv/ on first use.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
MODEL   ?= all-MiniLM-L6-v2
SUITE   ?= offline-en
ARGS    ?=
# torch 2.13.0 is the CPU build that lies on this machine's disk; plain `torch` would pull a
# multi-GB CUDA build. On a GPU machine, install your CUDA torch into .venv first.
TORCH   ?= torch==2.13.0

.PHONY: install eval test report bench clean

$(BIN)/evalkit: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $(BIN)/evalkit

install: $(BIN)/evalkit

eval: install
	$(BIN)/evalkit run --model $(MODEL) --suite $(SUITE) $(ARGS)

test: install
	$(BIN)/python -m pytest -q -x $(ARGS)

report: install
	$(BIN)/evalkit report --format md --out reports/leaderboard $(ARGS)
	$(BIN)/evalkit report --format html --out reports/leaderboard $(ARGS)

bench: install
	$(BIN)/python benchmarks/bench.py $(ARGS)

clean:
	rm -rf $(VENV) *.egg-info
