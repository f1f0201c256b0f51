"""evalkit.evaluate, the Python entry (evalkit/api.py): a model as a name, folder, spec or
FlagEmbedding-style object; tasks as names, folders, mteb task objects or a benchmark; the results
with to_dataframe(). The command line calls the same functions (evalkit/cli.py)."""
from __future__ import annotations

import json

import pytest

import evalkit
from evalkit.errors import EvalkitError


def test_minilm_on_stsbenchmark_is_mtebs_score(tmp_path):
    """The README's notebook line: 82.03 (MANIFEST's mteb 2.26), encoded cold: the default run's one
    real score of the offline suites (the others run in `make test-real`)."""
    res = evalkit.evaluate("all-MiniLM-L6-v2", ["STSBenchmark"], output=tmp_path / "r", cache_dir=tmp_path / "c")
    assert round(res.main_score("STSBenchmark"), 2) == 82.03
    df = res.to_dataframe()
    assert list(df.columns[:7]) == ["model", "variant", "task", "type", "split", "subset", "main_score"]
    assert df.loc[0, "task"] == "STSBenchmark" and df.loc[0, "split"] == "test" and df.loc[0, "status"] == "done"
    (tr,) = res.task_results
    assert tr.task_name == "STSBenchmark"
    assert "STSBenchmark test/default all-MiniLM-L6-v2: 82.03" in repr(res)


def test_tasks_as_mteb_objects_names_and_folders_are_the_same_run(tiny_bert, tmp_path):
    """mteb.get_task("STS12") (a registered task: run by its name, from the mirror) and the name give
    the same result; a task object mteb does not register runs as it is."""
    import mteb
    from mteb.mocks import MockSTSTask

    by_name = evalkit.evaluate(str(tiny_bert), "STS12", output=tmp_path / "a", cache_dir=tmp_path / "c")
    by_object = evalkit.evaluate(str(tiny_bert), [mteb.get_task("STS12"), MockSTSTask()], output=tmp_path / "b", cache_dir=tmp_path / "c")
    assert [o.task for o in by_object] == ["STS12", "MockSTSTask"]
    assert by_object.main_score("STS12") == by_name.main_score("STS12")
    assert by_object.outcomes[0].encoded == 0  # the same texts, the same model: from the cache
    doc = json.loads(by_object.outcomes[1].path.read_text())
    assert doc["evalkit"]["data_source"] == "object"


def test_a_flag_style_object_is_encoded_with_its_settings(tiny_bert, tmp_path):
    """A FlagModel-style object: the model it was built from, with its instruction, pooling and
    normalisation, exactly as the same flags on the command line."""
    from evalkit.cli import main

    fm = evalkit.FlagModel(str(tiny_bert), query_instruction_for_retrieval="find: ", pooling_method="mean", normalize_embeddings=False)
    spec = evalkit.api.model_spec(fm)
    assert (spec.query_instruction, spec.pooling, spec.normalize, spec.kind) == ("find: ", "mean", False, "embedder")
    res = evalkit.evaluate(fm, "STS12", output=tmp_path / "a", cache_dir=tmp_path / "c")
    assert main(["run", "--model", str(tiny_bert), "--pooling", "mean", "--query-instruction", "find: ", "--tasks", "STS12",
                 "--output", str(tmp_path / "b"), "--cache-dir", str(tmp_path / "c")]) == 0
    (cli_doc,) = (tmp_path / "b").rglob("STS12.json")
    # STS scores cosine similarity, which normalising does not change
    assert 100 * json.loads(cli_doc.read_text())["scores"]["test"][0]["main_score"] == pytest.approx(res.main_score("STS12"), abs=1e-4)
    assert evalkit.api.model_spec(evalkit.FlagReranker(str(tiny_bert))).kind == "reranker"


def test_options_are_the_command_lines(tiny_bert, tmp_path):
    """Few-shot settings as a list compare them (--fewshot-compare); bad combinations are one line."""
    from tests.conftest import write_jsonl

    task = tmp_path / "OwnIntent"  # a small classification folder (its train split is the few-shot pool)
    for split, n in (("train", 40), ("test", 20)):
        write_jsonl(task / f"{split}.jsonl", [{"text": f"how do I {w} my card {i}", "label": w}
                                              for i, w in enumerate(["block", "top up", "activate", "cancel"] * (n // 4))])
    (task / "task.yaml").write_text("name: OwnIntent\ntype: Classification\ninstruction: Classify the intent of the banking query\n")
    res = evalkit.evaluate(str(tiny_bert), [str(task)], fewshot=[0, 2], selector="first_n", output=tmp_path / "r",
                           cache_dir=tmp_path / "c")
    variants = [o.unit.variant for o in res]
    assert variants[0] is None and variants[1].startswith("fewshot-2") and not res.failed
    with pytest.raises(EvalkitError, match="add --ray"):
        evalkit.evaluate(str(tiny_bert), ["STS12"], ray_workers=2, output=tmp_path / "r")
    with pytest.raises(EvalkitError, match="not one evalkit can evaluate"):
        evalkit.evaluate(object(), ["STS12"])
