"""Every bad input ends in one clear line on stderr, exit code 2, and an untouched results folder."""
from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from evalkit.cli import main
from tests.conftest import write_jsonl

STS_ROWS = [{"sentence1": f"the bank {i}", "sentence2": f"the card {i % 3}", "score": float(i % 6)} for i in range(12)]


def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def unlocked(snap: dict) -> dict:
    """A snapshot without lock files (a lock records the last writer's pid, nothing else)."""
    return {k: v for k, v in snap.items() if not k.endswith(".lock")}


@pytest.fixture
def results(tmp_path, tiny_bert):
    """A results folder that already holds one finished result of the tiny model."""
    out = tmp_path / "results"
    task = tmp_path / "good"
    write_jsonl(task / "test.jsonl", STS_ROWS)
    (task / "task.yaml").write_text("name: Good\ntype: STS\n")
    assert main(["run", "--model", str(tiny_bert), "--tasks", str(task), "--output", str(out)]) == 0
    assert len(list(out.rglob("Good.json"))) == 1
    return out


def sts_task(tmp_path, rows=STS_ROWS, yaml_text="name: Bad\ntype: STS\n", name="bad"):
    d = tmp_path / name
    if rows is not None:
        write_jsonl(d / "test.jsonl", rows)
    d.mkdir(parents=True, exist_ok=True)
    if yaml_text is not None:
        (d / "task.yaml").write_text(yaml_text)
    return d


def retrieval_task(tmp_path, corpus, queries, qrels):
    d = tmp_path / "ret"
    write_jsonl(d / "corpus.jsonl", corpus)
    write_jsonl(d / "queries.jsonl", queries)
    (d / "qrels").mkdir(parents=True, exist_ok=True)
    (d / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{c}\t1\n" for q, c in qrels))
    (d / "task.yaml").write_text("name: Ret\ntype: Retrieval\n")
    return d


DOCS = [{"_id": f"d{i}", "title": "", "text": f"the gene {i}"} for i in range(5)]
QUERIES = [{"_id": "q1", "text": "a gene"}, {"_id": "q2", "text": "the cell"}]


def _no_weights(tmp_path, tiny_bert):
    d = tmp_path / "noweights"
    shutil.copytree(tiny_bert, d)
    for f in d.glob("*.safetensors"):
        f.unlink()
    return d


def _no_tokenizer(tmp_path, tiny_bert):
    d = tmp_path / "notok"
    shutil.copytree(tiny_bert, d)
    for f in ("tokenizer.json", "tokenizer_config.json", "vocab.txt"):
        (d / f).unlink(missing_ok=True)
    return d


def _nan_model(tmp_path, tiny_bert):
    import torch
    from transformers import AutoModel

    d = tmp_path / "nanmodel"
    shutil.copytree(tiny_bert, d)
    m = AutoModel.from_pretrained(d)
    with torch.no_grad():
        m.embeddings.word_embeddings.weight.fill_(float("nan"))
    m.save_pretrained(d)
    return d


# (id, argv builder, expected message fragment)
CASES = [
    ("unknown model", lambda t, m: ["--model", "no-such-model", "--tasks", str(sts_task(t))], "unknown model 'no-such-model'"),
    ("model folder without weights", lambda t, m: ["--model", str(_no_weights(t, m)), "--tasks", str(sts_task(t))], "has no weights"),
    ("model folder without tokenizer", lambda t, m: ["--model", str(_no_tokenizer(t, m)), "--tasks", str(sts_task(t))], "no tokenizer files"),
    ("hub unreachable for a hub-only model", lambda t, m: ["--model", "BAAI/bge-small-en-v1.5", "--tasks", str(sts_task(t))], "cannot be reached"),
    ("hub unreachable for a hub-only task", lambda t, m: ["--model", str(m), "--tasks", "SICK-R"], "Hugging Face hub, which cannot be reached"),
    ("unknown task", lambda t, m: ["--model", str(m), "--tasks", "NoSuchTask"], "unknown task 'NoSuchTask'"),
    ("unknown suite", lambda t, m: ["--model", str(m), "--suite", "no-suite"], "unknown suite 'no-suite'"),
    ("task folder without task.yaml", lambda t, m: ["--model", str(m), "--tasks", str(sts_task(t, yaml_text=None))], "has no task.yaml"),
    ("task folder with an unknown type", lambda t, m: ["--model", str(m), "--tasks", str(sts_task(t, yaml_text="name: X\ntype: Poetry\n"))], "type 'Poetry'"),
    ("missing data file", lambda t, m: ["--model", str(m), "--tasks", str(sts_task(t, rows=None))], "no data file"),
    ("malformed JSONL line", lambda t, m: ["--model", str(m), "--tasks", str(_malformed(t))], "test.jsonl:3: malformed JSON"),
    ("empty corpus", lambda t, m: ["--model", str(m), "--tasks", str(retrieval_task(t, [], QUERIES, [("q1", "d1")]))], "corpus.jsonl is empty"),
    ("empty queries", lambda t, m: ["--model", str(m), "--tasks", str(retrieval_task(t, DOCS, [], [("q1", "d1")]))], "queries.jsonl is empty"),
    ("qrels naming unknown ids", lambda t, m: ["--model", str(m), "--tasks", str(retrieval_task(t, DOCS, QUERIES, [("q1", "d1"), ("q9", "d1"), ("q2", "x1"), ("q2", "x2")]))], "1 unknown query ids and 2 unknown document ids"),
    ("duplicate ids", lambda t, m: ["--model", str(m), "--tasks", str(retrieval_task(t, DOCS + DOCS[:2], QUERIES, [("q1", "d1")]))], "2 duplicate ids"),
    ("STS score outside the range", lambda t, m: ["--model", str(m), "--tasks", str(sts_task(t, rows=STS_ROWS + [{"sentence1": "a", "sentence2": "b", "score": 7.5}]))], "outside [0, 5]"),
    ("STS score not a number", lambda t, m: ["--model", str(m), "--tasks", str(sts_task(t, rows=STS_ROWS + [{"sentence1": "a", "sentence2": "b", "score": "high"}]))], "non-numeric"),
    ("label column missing", lambda t, m: ["--model", str(m), "--tasks", str(_no_label(t))], "has no label column"),
    ("NaN embeddings from the model", lambda t, m: ["--model", str(_nan_model(t, m)), "--tasks", str(sts_task(t))], "NaN or infinite embeddings"),
    ("batch size 0", lambda t, m: ["--model", str(m), "--tasks", str(sts_task(t)), "--batch-size", "0"], "batch size must be a positive integer"),
    ("unwritable output folder", lambda t, m: ["--model", str(m), "--tasks", str(sts_task(t)), "--output", str(_a_file(t) / "sub")], "cannot write to"),
]


RUNTIME = {"NaN embeddings from the model"}


def _malformed(tmp_path):
    d = sts_task(tmp_path)
    lines = (d / "test.jsonl").read_text().splitlines()
    lines[2] = '{"sentence1": "broken", '
    (d / "test.jsonl").write_text("\n".join(lines) + "\n")
    return d


def _no_label(tmp_path):
    d = tmp_path / "cls"
    write_jsonl(d / "train.jsonl", [{"text": f"the bank {i}", "label": i % 2} for i in range(20)])
    write_jsonl(d / "test.jsonl", [{"text": "a card"}])
    (d / "task.yaml").write_text("name: Cls\ntype: Classification\n")
    return d


def _a_file(tmp_path):
    f = tmp_path / "plainfile"
    f.write_text("x")
    return f


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input(case, tmp_path, tiny_bert, results, capsys, monkeypatch):
    name, argv, fragment = case
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)  # exercise the real hub path (unreachable here)
    args = argv(tmp_path, tiny_bert)
    if "--output" not in args:
        args += ["--output", str(results)]
    before = snapshot(results)
    capsys.readouterr()
    rc = main(["run", *args])
    err = [l for l in capsys.readouterr().err.splitlines() if l.strip()]
    assert rc == 2, (name, err)
    assert len(err) == 1, (name, err)
    assert fragment in err[0], (name, err[0])
    assert "Traceback" not in err[0]
    if name in RUNTIME:  # found while the model runs: the run had taken the folder's lock
        assert unlocked(snapshot(results)) == unlocked(before), name
    else:  # found by the plan, before anything is written: the folder byte for byte as it was, lock file included
        assert snapshot(results) == before, name


def test_persistent_oom_at_batch_size_one(tmp_path, tiny_bert, results, capsys, monkeypatch):
    import torch

    from evalkit.models import encoder

    def oom(self, model, batch):
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(encoder.EmbedHead, "__call__", oom)
    before = snapshot(results)
    capsys.readouterr()
    fresh = [{**r, "sentence1": r["sentence1"] + " river"} for r in STS_ROWS]  # nothing cached
    rc = main(["run", "--model", str(tiny_bert), "--tasks", str(sts_task(tmp_path, rows=fresh)), "--output", str(results), "--batch-size", "4"])
    err = [l for l in capsys.readouterr().err.splitlines() if l.strip()]
    assert rc == 2 and len(err) == 1 and "out of memory" in err[0] and "batch size 1" in err[0]
    assert unlocked(snapshot(results)) == unlocked(before)


def test_a_traceback_only_with_debug(tmp_path, tiny_bert):
    from evalkit.errors import EvalkitError

    with pytest.raises(EvalkitError):
        main(["--debug", "run", "--model", "no-such-model", "--tasks", "STSBenchmark"])


def test_second_run_on_the_same_folder_is_refused(tmp_path, tiny_bert, results, capsys):
    """A lock per result folder: a concurrent run gets a clear message instead of corrupting files."""
    import fcntl

    folder = next(results.rglob("Good.json")).parent
    with open(folder / ".lock", "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fh.write("pid 999999")
        fh.flush()
        capsys.readouterr()
        rc = main(["run", "--model", str(tiny_bert), "--tasks", str(sts_task(tmp_path)), "--output", str(results)])
    err = capsys.readouterr().err
    assert rc == 2 and "being written by another evalkit run" in err
