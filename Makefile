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

# published reference rows for `make report`, when the shared data folder is beside the project
PUBLISHED ?= $(wildcard ../shared/data/published_scores.json)

.PHONY: install eval test test-avx2 test-real test-full report bench bench-gpu gpu-carry clean browser

$(BIN)/evalkit: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[test]"
	# AIR-Bench's evaluation package, for the tests that hold evalkit to it: without its dependencies,
	# since its pytrec_eval is an sdist that downloads trec_eval while it builds (mteb brings
	# pytrec-eval-terrier, which provides pytrec_eval; datasets, pandas and rich come with mteb too)
	$(BIN)/python -m pip install -q --no-deps air-benchmark==0.1.0
	touch $(BIN)/evalkit

install: $(BIN)/evalkit

eval: install
	$(BIN)/evalkit run --model $(MODEL) --suite $(SUITE) $(ARGS)

# headless Chromium (Debian's `chromium`) for the HTML report test
browser:
	command -v chromium >/dev/null || (apt-get update && apt-get install -y chromium)

# everything but the real MiniLM's offline-suite runs (marker `real`: README, "Tests"), in TEST_WORKERS
# processes (pytest-xdist, whole files to a process) of one torch thread each: 2 cores kept busy by
# tests that mostly wait on Python (mteb's evaluators, process starts, Ray), with no thread oversubscribed;
# the files that start Ray on one of them, the longest first (tests/conftest.py, RAY_FILES and LONGEST_FIRST)
TEST_WORKERS ?= 2
test: install browser
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -x -m "not real" -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder $(ARGS)

# make test with torch, oneDNN and MKL held to AVX2 kernels: on a CPU with AVX-512 or AMX, what the slower
# AVX2-only kind computes (its BLAS rounds some dot products differently; bf16 matmuls are emulated)
test-avx2:
	ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 $(MAKE) test

# the real MiniLM's offline-suite runs alone: the scores against mteb 2.26, the killed-and-resumed run
test-real: install browser
	$(BIN)/python -m pytest -q -x -m real $(ARGS)

# the whole suite on all of the real data (README: what the default run cuts)
test-full: install browser
	EVALKIT_FULL_SUITES=1 $(BIN)/python -m pytest -q -x $(ARGS)

report: install
	$(BIN)/evalkit report --format md --out reports/leaderboard $(if $(PUBLISHED),--with-published $(PUBLISHED)) $(ARGS)
	$(BIN)/evalkit report --format html --out reports/leaderboard $(if $(PUBLISHED),--with-published $(PUBLISHED)) $(ARGS)

bench: install
	$(BIN)/python benchmarks/bench.py $(ARGS)
	$(BIN)/python benchmarks/bench_ray.py

# on a machine with a GPU (and a CUDA torch in .venv): encode throughput of bge-large- and
# bge-en-icl-sized random models against sentence-transformers, and MiniLM's fp16 score change
bench-gpu: install
	$(BIN)/python benchmarks/bench_gpu.py $(ARGS)

# what benchmarks/device_lease.sh needs on a device machine without a package registry (benchmarks/carry/)
gpu-carry: install
	$(BIN)/python benchmarks/make_carry.py

clean:
	rm -rf $(VENV) *.egg-info
