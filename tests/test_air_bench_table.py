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


def test_hub_names_are_the_packages(monkeypatch, tmp_path):
    """Without a local copy evalkit asks the hub for exactly what the package's DataLoader asks:
    the same repositories, configs and split names (24.04 without the split suffix, 24.05 dev
    judgements in the -dev repository, "-" written "_" in dataset names)."""
    import datasets
    from air_benchmark.evaluation_utils.data_loader import DataLoader

    import evalkit.tasks
    from evalkit.tasks import build_task

    calls = []

    def fake(repo, config, split, **kw):
        calls.append((repo, config, split))
        if split.startswith("corpus"):
            return [{"id": "d1", "text": "a document"}, {"id": "d2", "text": "another"}]
        if split.startswith("queries"):
            return [{"id": "q1", "text": "a query"}]
        return [{"qid": "q1", "docid": "d1", "relevance": 1}, {"qid": "q1", "docid": "d2", "relevance": 0}]

    monkeypatch.setattr(datasets, "load_dataset", fake)
    monkeypatch.setitem(evalkit.tasks.hub._HUB_STATE, "https://huggingface.co", True)
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setenv("EVALKIT_DATA", str(tmp_path))  # no local copy
    reg = Registry()
    for name in ("AIR-Bench-long-doc-healthcare-en-pubmed_100K-200K_1", "AIR-Bench-24.05-qa-finance-en", "AIR-Bench-24.05-long-doc-law-en-lex_files_300K-400K"):
        spec = reg.task(name)
        ab = spec.air_bench
        calls.clear()
        build_task(spec)
        ours = sorted(calls)
        calls.clear()
        loader = DataLoader(ab["version"])
        args = (ab["task_type"], ab["domain"], ab["lang"], ab["dataset"])
        loader.load_corpus(*args)
        for split in spec.eval_splits:
            loader.load_queries(*args, split=split)
            loader.load_qrels(*args, split=split)
        assert ours == sorted(calls), name
