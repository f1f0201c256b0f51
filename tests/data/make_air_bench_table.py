"""Writes tasks/air-bench.yaml from the installed `air-benchmark` package's task table.

    .venv/bin/python tests/data/make_air_bench_table.py > tasks/air-bench.yaml

evalkit never imports air_benchmark; tests/test_air_bench_table.py holds the YAML equal to the package,
entry by entry, so this script only saves typing."""
from __future__ import annotations

import sys

from air_benchmark.tasks import BenchmarkTable

OLD = "AIR-Bench_24.04"  # its tasks keep evalkit's first names (no version in the name)


def task_name(version: str, task_type: str, domain: str, lang: str, dataset: str) -> str:
    head = "AIR-Bench" if version == OLD else f"AIR-Bench-{version.split('_')[1]}"
    tail = "" if dataset == "default" else f"-{dataset}"
    return f"{head}-{task_type}-{domain}-{lang}{tail}"


def main(out=sys.stdout) -> None:
    w = out.write
    w("# AIR-Bench: every dataset of every version, as air-benchmark 0.1.0's air_benchmark/tasks/ defines it\n"
      "# (written by tests/data/make_air_bench_table.py; tests/test_air_bench_table.py compares it with the package).\n"
      "# Each dataset is an mteb retrieval task (evalkit/tasks/air_bench.py): AIR-Bench's search top 1000, its\n"
      "# metrics (pytrec_eval, k in 1 3 5 10 50 100 1000, 5 decimals), main score nDCG@10 for QA and Recall@10\n"
      "# for Long-Doc, the leaderboard's. `splits` are the dataset's; a split is scored where its judgements\n"
      "# are at hand (24.05 dev is public; test judgements are the leaderboard's, gated on the hub).\n"
      "# Data: hub snapshots in the data folder, as downloaded (AIR-Bench/<repo>/<version>/<dataset>/...), else the hub.\n"
      "defaults:\n  source: air-bench\n  type: Retrieval\ntasks:\n")
    suites: dict[str, list[str]] = {}
    for version, table in BenchmarkTable.items():
        v = version.split("_")[1]
        for task_type, domains in table.items():
            for domain, langs in domains.items():
                for lang, datasets in langs.items():
                    for dataset, info in datasets.items():
                        name = task_name(version, task_type, domain, lang, dataset)
                        q = ", ".join(f"{s}: {n}" for s, n in info["size"]["queries"].items())
                        src = info["name"].replace('"', "'")
                        w(f"  {name}:\n    eval_splits: [{', '.join(info['splits'])}]\n"
                          f"    air_bench: {{version: {version}, task_type: {task_type}, domain: {domain}, lang: {lang}, "
                          f"dataset: \"{dataset}\", corpus_size: {info['size']['corpus']}, queries: {{{q}}}, source_name: \"{src}\"}}\n")
                        for s in (f"air-bench-{v}", f"air-bench-{v}-{task_type}", f"air-bench-{v}-{task_type}-{lang}"):
                            suites.setdefault(s, []).append(name)
    # the seeds' names for the English 24.04 tables (tasks/benchmarks.yaml)
    suites["air-bench-qa-en"] = suites["air-bench-24.04-qa-en"]
    suites["air-bench-longdoc-en"] = suites["air-bench-24.04-long-doc-en"]
    w("suites:\n")
    for s, names in suites.items():
        w(f"  {s}:\n" + "".join(f"    - {n}\n" for n in names))


if __name__ == "__main__":
    main()
