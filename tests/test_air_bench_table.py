"""evalkit's AIR-Bench task table (tasks/air-bench.yaml) against air-benchmark 0.1.0's own
(air_benchmark/tasks/: BenchmarkTable), entry by entry, for every version and language: each
dataset one evalkit task with the package's task type, domain, language, name, splits and sizes,
and suites per version, task type and language holding exactly the package's datasets."""
from __future__ import annotations

from air_benchmark.tasks import BenchmarkTable

from evalkit.tasks import Registry


def test_the_task_table_is_the_packages():
    reg = Registry()
    ours = {}
    for s in reg.all_specs():
        if s.source == "air-bench":
            ab = s.air_bench
            key = (ab["version"], ab["task_type"], ab["domain"], ab["lang"], ab["dataset"])
            assert key not in ours, f"{s.name} and {ours[key].name} are the same dataset"
            ours[key] = s
    theirs = {
        (v, t, d, lang, name): info
        for v, table in BenchmarkTable.items() for t, doms in table.items() for d, langs in doms.items()
        for lang, dss in langs.items() for name, info in dss.items()
    }
    assert set(ours) == set(theirs)
    assert len(theirs) == 28 + 69  # 24.04 (en, zh) and 24.05 (13 languages)
    for key, info in theirs.items():
        s = ours[key]
        assert s.type == "Retrieval" and s.eval_splits == info["splits"], s.name
        assert s.air_bench["corpus_size"] == info["size"]["corpus"], s.name
        assert s.air_bench["queries"] == info["size"]["queries"], s.name
        assert s.air_bench["source_name"] == info["name"], s.name
    for v in BenchmarkTable:
        short = v.split("_")[1]
        members = {(t, lang) for (vv, t, _, lang, _) in theirs if vv == v}
        for t, lang in members:
            want = {ours[k].name for k in theirs if k[0] == v and k[1] == t and k[3] == lang}
            assert {s.name for s in reg.suite(f"air-bench-{short}-{t}-{lang}")} == want
        assert {s.name for s in reg.suite(f"air-bench-{short}")} == {ours[k].name for k in theirs if k[0] == v}
    # the seeds' English 24.04 tables keep their suites, now with the package's names (capital K)
    assert "pubmed_100K-200K_1" in [s.air_bench["dataset"] for s in reg.suite("air-bench-longdoc-en")]
    assert {s.name for s in reg.suite("air-bench-qa-en")} == {s.name for s in reg.suite("air-bench-24.04-qa-en")}
