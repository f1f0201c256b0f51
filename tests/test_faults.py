"""Faults a long evaluation meets (issue 17): a corrupted or unwritable embedding cache, a full disk
under --output, degenerate data, and result files others can read.

Each ends in the right score or in one clear line; no traceback, no partial file. A full disk and a
read-only folder are real where this process may mount a small tmpfs (root), simulated otherwise.
"""
from __future__ import annotations

import errno
import json
import logging
import os
import sqlite3
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from evalkit import cache as cache_mod
from evalkit.cache import EmbeddingCache
from evalkit.cli import main
from evalkit.errors import EvalkitError
from evalkit.results import atomic_write_text, scan
from tests.conftest import write_jsonl

STS_ROWS = [{"sentence1": f"the bank {i}", "sentence2": f"a card {i % 4}", "score": float(i % 6)} for i in range(12)]


# ---------------------------------------------------------------- helpers

def sts_folder(root: Path, name: str = "Sts", rows=STS_ROWS) -> Path:
    d = root / name
    write_jsonl(d / "test.jsonl", rows)
    (d / "task.yaml").write_text(f"name: {name}\ntype: STS\n")
    return d


def run(model: Path, tasks: list[Path], out: Path, cache_dir: Path | None, *extra: str) -> int:
    argv = ["run", "--model", str(model), "--tasks", ",".join(map(str, tasks)), "--output", str(out)]
    argv += ["--cache-dir", str(cache_dir)] if cache_dir is not None else ["--no-cache"]
    return main([*argv, *extra])


def scores(out: Path) -> dict[str, float]:
    return {r.task: r.score for r in scan(out)}


def cache_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "evalkit" and r.levelno == logging.WARNING and "embedding cache" in r.getMessage()]


def checkpoint(db_file: Path) -> None:
    """Everything of the WAL into the main file, so that bytes overwritten there are the data."""
    db = sqlite3.connect(db_file)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()


def n_vectors(db_file: Path) -> int:
    db = sqlite3.connect(db_file)
    try:
        return db.execute("SELECT COUNT(*) FROM vectors").fetchone()[0]
    finally:
        db.close()


def fill(folder: Path) -> Path:
    """Fill the filesystem of `folder` to the last byte; the filler file, to delete later."""
    filler = folder / "filler"
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError as e:
            assert e.errno == errno.ENOSPC
    return filler


@pytest.fixture
def tmpfs(tmp_path):
    """mount(name, size) -> a folder on a fresh tmpfs of that size (skips where mounting is not allowed)."""
    mounted: list[Path] = []

    def mount(name: str, size: str = "64k") -> Path:
        if os.geteuid() != 0:
            pytest.skip("mounting a tmpfs needs root")
        d = tmp_path / name
        d.mkdir()
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(d)], capture_output=True, text=True)
        if r.returncode:
            pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
        mounted.append(d)
        return d

    yield mount
    for d in reversed(mounted):
        subprocess.run(["umount", "-l", str(d)], capture_output=True)


def remount_ro(d: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(d)], check=True, capture_output=True)


@pytest.fixture(scope="module")
def reference(tiny_bert, tmp_path_factory) -> dict[str, float]:
    """The scores of the two STS folders below without any cache: what every faulty run must give."""
    root = tmp_path_factory.mktemp("reference")
    out = root / "r"
    assert run(tiny_bert, reference_tasks(root), out, None) == 0
    return scores(out)


def reference_tasks(root: Path) -> list[Path]:
    return [sts_folder(root, "Sts"), sts_folder(root, "Sts2", [{**r, "sentence1": r["sentence1"] + " river"} for r in STS_ROWS])]


# ---------------------------------------------------------------- the cache is derived data

def _overwrite_header(db_file: Path) -> None:
    with open(db_file, "r+b") as f:
        f.write(b"this is no db ..")


def _overwrite_pages(db_file: Path) -> None:
    """A few bytes at the start of every page after the first: the schema reads, the tables do not."""
    size = db_file.stat().st_size
    with open(db_file, "r+b") as f:
        for off in range(4096, size, 4096):
            f.seek(off)
            f.write(b"\x07" * 12)


@pytest.mark.parametrize("damage", [_overwrite_header, _overwrite_pages], ids=["header", "pages"])
def test_a_corrupted_cache_is_moved_aside_and_the_run_goes_on(damage, tiny_bert, tmp_path, reference, caplog, capsys):
    tasks = reference_tasks(tmp_path)
    c = tmp_path / "cache"
    assert run(tiny_bert, tasks, tmp_path / "r1", c) == 0
    db_file = c / "embeddings.sqlite3"
    checkpoint(db_file)
    n = n_vectors(db_file)
    assert n == 28  # distinct texts of the two tasks
    damage(db_file)
    with pytest.raises(sqlite3.DatabaseError):
        n_vectors(db_file)

    caplog.clear()
    capsys.readouterr()
    assert run(tiny_bert, tasks, tmp_path / "r2", c) == 0
    err = capsys.readouterr().err
    assert "Traceback" not in err and "error" not in err.lower()
    (warning,) = cache_warnings(caplog)
    assert "is corrupted" in warning and "moved it aside to embeddings.sqlite3.corrupt-" in warning and "\n" not in warning
    assert scores(tmp_path / "r2") == reference
    (aside,) = c.glob("embeddings.sqlite3.corrupt-*[0-9]")
    assert aside.name in warning
    assert n_vectors(db_file) == n  # the fresh cache holds this run's vectors

    caplog.clear()  # and the next run uses it: nothing encoded, no warning
    assert run(tiny_bert, tasks, tmp_path / "r3", c) == 0
    assert cache_warnings(caplog) == [] and scores(tmp_path / "r3") == reference


def test_a_file_that_is_not_a_database_goes_aside_with_its_wal_and_shm(tmp_path, caplog):
    c = tmp_path / "c"
    c.mkdir()
    for suffix, content in (("", b"not a database at all\n" * 50), ("-wal", b"w" * 100), ("-shm", b"s" * 100)):
        (c / f"embeddings.sqlite3{suffix}").write_bytes(content)
    cache = EmbeddingCache(c)
    assert cache.get_many("ns", ["a", "b"]) == {}
    (warning,) = cache_warnings(caplog)
    aside = warning.split("moved it aside to ")[1].split()[0]
    assert "file is not a database" in warning
    assert (c / aside).read_bytes().startswith(b"not a database")
    assert (c / f"{aside}-wal").read_bytes() == b"w" * 100 and (c / f"{aside}-shm").exists()  # SQLite rewrites the -shm index
    import numpy as np

    cache.register("ns", {"model": "m"})
    cache.put_many("ns", ["a"], np.ones((1, 4), dtype=np.float32))
    assert list(cache.get_many("ns", ["a", "b"])) == [0] and cache.disabled is None
    assert [s["vectors"] for s in cache.stats()] == [1]


def test_a_vector_of_the_wrong_size_counts_as_corruption(tmp_path, caplog):
    import numpy as np

    cache = EmbeddingCache(tmp_path / "c")
    cache.put_many("ns", ["a", "b"], np.ones((2, 4), dtype=np.float32))
    cache.db.execute("UPDATE vectors SET vec = ? WHERE key = ?", (b"\0" * 5, cache_mod.text_key("b")))
    fresh = EmbeddingCache(tmp_path / "c")
    assert fresh.get_many("ns", ["a", "b"]) == {}
    (warning,) = cache_warnings(caplog)
    assert "not float32" in warning and len(list((tmp_path / "c").glob("embeddings.sqlite3.corrupt-*[0-9]"))) == 1


def test_a_stored_output_cut_mid_record_counts_as_corruption(tmp_path, caplog):
    """Outputs of any size (M3's lexical weights: 8 bytes a token) are whole records, or the file is damaged."""
    cache = EmbeddingCache(tmp_path / "c")
    cache.put_blobs("lex", ["a", "b", "empty"], [b"\1" * 16, b"\2" * 8, b""])
    assert EmbeddingCache(tmp_path / "c").get_blobs("lex", ["a", "b", "empty", "c"], unit=8) == {0: b"\1" * 16, 1: b"\2" * 8, 2: b""}
    cache.db.execute("UPDATE vectors SET vec = ? WHERE key = ?", (b"\0" * 12, cache_mod.text_key("b")))
    assert EmbeddingCache(tmp_path / "c").get_blobs("lex", ["a", "b"], unit=8) == {}
    (warning,) = cache_warnings(caplog)
    assert "8-byte records" in warning and len(list((tmp_path / "c").glob("embeddings.sqlite3.corrupt-*[0-9]"))) == 1


class _FullDisk(sqlite3.Connection):
    """A connection whose disk fills up at the first vector written."""

    def executemany(self, sql, *a):
        if sql.startswith("INSERT OR REPLACE INTO vectors"):
            raise sqlite3.OperationalError("database or disk is full")
        return super().executemany(sql, *a)


def test_a_full_disk_turns_the_cache_off_with_one_warning(tiny_bert, tmp_path, reference, caplog, capsys, monkeypatch):
    real_connect = sqlite3.connect
    monkeypatch.setattr(sqlite3, "connect", lambda *a, **kw: real_connect(*a, factory=_FullDisk, **kw))
    c = tmp_path / "cache"
    capsys.readouterr()
    assert run(tiny_bert, reference_tasks(tmp_path), tmp_path / "r", c) == 0  # two tasks: still one warning
    err = capsys.readouterr().err
    assert "Traceback" not in err
    (warning,) = cache_warnings(caplog)
    assert "cannot be used (writing to it: database or disk is full): continuing without the cache" in warning
    assert scores(tmp_path / "r") == reference
    assert n_vectors(c / "embeddings.sqlite3") == 0


def test_a_cache_folder_that_cannot_be_made(tiny_bert, tmp_path, reference, caplog, capsys):
    (tmp_path / "plainfile").write_text("x")
    c = tmp_path / "plainfile" / "cache"
    assert run(tiny_bert, reference_tasks(tmp_path), tmp_path / "r", c) == 0
    (warning,) = cache_warnings(caplog)
    assert "cannot create its folder" in warning and scores(tmp_path / "r") == reference
    capsys.readouterr()  # but `evalkit cache stats` is about the cache: an error
    assert main(["cache", "stats", "--cache-dir", str(c)]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("evalkit: error: embedding cache") and "cannot be used" in line


def test_a_really_full_disk_under_the_cache(tiny_bert, tmp_path, reference, tmpfs, caplog, capsys):
    c = tmpfs("cachefs", "64k")
    fill(c)
    capsys.readouterr()
    assert run(tiny_bert, reference_tasks(tmp_path), tmp_path / "r", c) == 0
    assert "Traceback" not in capsys.readouterr().err
    (warning,) = cache_warnings(caplog)
    assert "continuing without the cache" in warning
    assert scores(tmp_path / "r") == reference


def test_a_read_only_cache_folder(tiny_bert, tmp_path, reference, tmpfs, caplog, capsys):
    tasks = reference_tasks(tmp_path)
    c = tmpfs("cachefs", "1m")
    assert run(tiny_bert, tasks, tmp_path / "r1", c) == 0
    checkpoint(c / "embeddings.sqlite3")
    remount_ro(c)
    caplog.clear()
    capsys.readouterr()
    assert run(tiny_bert, tasks, tmp_path / "r2", c) == 0
    assert "Traceback" not in capsys.readouterr().err
    (warning,) = cache_warnings(caplog)
    assert "continuing without the cache" in warning
    assert scores(tmp_path / "r2") == reference


# ---------------------------------------------------------------- writing results

def test_result_files_get_the_usual_permissions(tiny_bert, tmp_path):
    old = os.umask(0o022)
    try:
        assert run(tiny_bert, [sts_folder(tmp_path)], tmp_path / "r", None) == 0
        written = [p for p in (tmp_path / "r").rglob("*.json")]
        assert written and {oct(p.stat().st_mode & 0o777) for p in written} == {oct(0o644)}
        os.umask(0o077)
        atomic_write_text(tmp_path / "private.txt", "x")
        assert (tmp_path / "private.txt").stat().st_mode & 0o777 == 0o600
        os.umask(0o002)
        atomic_write_text(tmp_path / "r" / "group.txt", "x")
        assert (tmp_path / "r" / "group.txt").stat().st_mode & 0o777 == 0o664
    finally:
        os.umask(old)


def _on(folder: Path, fd: int) -> bool:
    return os.readlink(f"/proc/self/fd/{fd}").startswith(str(folder))


@pytest.mark.parametrize("where,code", [("write", errno.ENOSPC), ("fsync", errno.ENOSPC), ("fsync", errno.EIO),
                                        ("replace", errno.EROFS), ("replace", errno.EACCES)])
def test_a_failed_write_is_one_line_and_changes_nothing(tmp_path, monkeypatch, where, code):
    target = tmp_path / "out" / "Task.json"
    atomic_write_text(target, "the finished result\n")
    real = {"write": os.write, "fsync": os.fsync, "replace": os.replace}[where]

    def failing(*a):
        hit = Path(a[1]).parent == target.parent if where == "replace" else _on(target.parent, a[0])
        if hit:
            raise OSError(code, os.strerror(code))
        return real(*a)

    monkeypatch.setattr(os, where, failing)
    with pytest.raises(EvalkitError) as e:
        atomic_write_text(target, "a new result\n" * 1000)
    msg = str(e.value)
    assert "\n" not in msg and f"cannot write {target} ({os.strerror(code)})" in msg
    assert target.read_text() == "the finished result\n"
    assert sorted(p.name for p in target.parent.iterdir()) == ["Task.json"]


def test_a_folder_where_no_file_can_be_made(tmp_path, monkeypatch):
    real = os.open

    def full(path, flags, *a):
        if str(path).startswith(str(tmp_path / "out")) and flags & os.O_CREAT:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(path, flags, *a)

    monkeypatch.setattr(os, "open", full)
    with pytest.raises(EvalkitError, match=r"cannot write to .*out \(No space left on device\)"):
        atomic_write_text(tmp_path / "out" / "Task.json", "x")


def test_a_really_full_disk_under_output(tmpfs):
    out = tmpfs("outfs", "64k")
    target = out / "model" / "rev" / "Task.json"
    atomic_write_text(target, "the finished result\n")
    filler = fill(out)
    with pytest.raises(EvalkitError, match=r"cannot write .*Task.json \(No space left on device\)"):
        atomic_write_text(target, "a new result\n" * 2000)
    assert target.read_text() == "the finished result\n"
    assert sorted(p.name for p in target.parent.iterdir()) == ["Task.json"]
    filler.unlink()
    atomic_write_text(target, "a new result\n" * 2000)
    assert target.read_text() == "a new result\n" * 2000


def test_a_run_on_a_full_disk_stops_with_one_line_and_resumes(tiny_bert, tmp_path, tmpfs, reference, capsys):
    out = tmpfs("outfs", "256k")
    tasks = reference_tasks(tmp_path)
    assert run(tiny_bert, tasks[:1], out, None) == 0
    (first,) = out.rglob("Sts.json")
    before = first.read_bytes()
    filler = fill(out)
    capsys.readouterr()
    rc = run(tiny_bert, tasks, out, None)
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line.lower() or "Traceback" in line]
    assert rc != 0 and len(err) == 1 and "No space left on device" in err[0] and "Traceback" not in err[0]
    assert first.read_bytes() == before
    assert not [p for p in out.rglob("*.tmp")] and not list(out.rglob("Sts2.json"))
    filler.unlink()
    assert run(tiny_bert, tasks, out, None) == 0
    assert first.read_bytes() == before and scores(out) == reference


# ---------------------------------------------------------------- degenerate data

def _folder(root: Path, typ: str, files: dict, name: str = "Bad") -> Path:
    d = root / name
    for fname, content in files.items():
        if fname.endswith(".jsonl"):
            write_jsonl(d / fname, content)
        else:
            (d / fname).parent.mkdir(parents=True, exist_ok=True)
            (d / fname).write_text(content if isinstance(content, str) else json.dumps(content))
    (d / "task.yaml").write_text(f"name: {name}\ntype: {typ}\n")
    return d


def _cls(train, test):
    return {"train.jsonl": [{"text": f"the bank {i}", "label": lab} for i, lab in enumerate(train)],
            "test.jsonl": [{"text": f"a card {i}", "label": lab} for i, lab in enumerate(test)]}


def _sts(scores_):
    return {"test.jsonl": [{"sentence1": f"the bank {i}", "sentence2": "a card", "score": s} for i, s in enumerate(scores_)]}


def _clu(labels):
    return {"test.json": {"sentences": [f"the bank {i}" for i in range(len(labels))], "labels": labels}}


def _ret(qrels: str):
    return {"corpus.jsonl": [{"_id": f"d{i}", "title": "", "text": f"the gene {i}"} for i in range(3)],
            "queries.jsonl": [{"_id": "q1", "text": "a gene"}, {"_id": "q2", "text": "the cell"}],
            "qrels/test.tsv": "query-id\tcorpus-id\tscore\n" + qrels}


# (id, type, files, the file named, what is wrong)
DEGENERATE = [
    ("classification with one training class", "Classification", _cls(["a"] * 10, ["a", "b"]), "train.jsonl", "the training split has one class ('a')"),
    ("classification with an empty test split", "Classification", _cls(["a", "b"], []), "test.jsonl", "is empty"),
    ("classification labels of two types", "Classification", _cls(["a", 1, "b"], ["a"]), "train.jsonl", "labels mix strings and numbers"),
    ("classification label that is no class", "Classification", _cls(["a", None], ["a"]), "train.jsonl", "row 2 has the label None"),
    ("classification test labels of another type", "Classification", _cls(["a", "b"], [0, 1]), "test.jsonl", "its labels are numbers but the training split's"),
    ("classification of two classes not labelled 0 and 1", "Classification", _cls(["neg", "pos"] * 3, ["neg", "pos"]), "test.jsonl", "two classes labelled 'neg' and 'pos'"),
    ("STS with every score equal", "STS", _sts([3.0] * 8), "test.jsonl", "all 8 scores are 3.0: the Spearman correlation is undefined"),
    ("STS with one row", "STS", _sts([2]), "test.jsonl", "all 1 scores are 2"),
    ("STS with no rows", "STS", {"test.jsonl": []}, "test.jsonl", "has no rows"),
    ("pairs with one label", "PairClassification", {"test.jsonl": [{"sentence1": "a", "sentence2": "b", "label": 1}] * 5}, "test.jsonl", "pair classification needs both 0 and 1"),
    ("pairs with no rows", "PairClassification", {"test.jsonl": []}, "test.jsonl", "has no rows"),
    ("clustering with one label", "Clustering", _clu(["x"] * 60), "test.json", "clustering needs at least 2 labels"),
    ("clustering too small for mteb's sampling", "Clustering", _clu(["x", "y"] * 15), "test.json", "here 1 of 30: it needs at least 50 sentences"),
    ("retrieval without judgements", "Retrieval", _ret(""), "test.tsv", "has no judgements"),
    ("retrieval without a relevant document", "Retrieval", _ret("q1\td0\t0\nq2\td1\t0\n"), "test.tsv", "none of its 2 judgements is positive"),
]


@pytest.mark.parametrize("case", DEGENERATE, ids=[c[0] for c in DEGENERATE])
def test_degenerate_data_is_one_line_naming_task_file_and_fault(case, tmp_path):
    from evalkit.tasks import build_task, task_from_folder

    _, typ, files, fname, what = case
    folder = _folder(tmp_path, typ, files)
    with pytest.raises(EvalkitError) as e:
        build_task(task_from_folder(folder))
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("task Bad: ") and fname in msg and what in msg, msg


@pytest.mark.parametrize("case", [DEGENERATE[0], DEGENERATE[5]], ids=["one class", "equal STS scores"])
def test_degenerate_data_stops_the_run_before_any_model_loads(case, tiny_bert, tmp_path, capsys, monkeypatch):
    from evalkit.models.embedder import Embedder

    def no_model(self):
        raise AssertionError("the model was loaded before the data were checked")

    monkeypatch.setattr(Embedder, "core", property(no_model))
    _, typ, files, fname, what = case
    capsys.readouterr()
    rc = run(tiny_bert, [_folder(tmp_path, typ, files)], tmp_path / "r", tmp_path / "c")
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert rc == 2 and len(err) == 1 and what in err[0] and "task Bad:" in err[0], err
    assert not (tmp_path / "r").exists() or not list((tmp_path / "r").rglob("*.json"))


def test_few_rows_are_fine_where_mteb_samples_what_there_is(tiny_bert, tmp_path):
    """mteb takes up to samples_per_label texts per class: two training rows of two classes train a
    classifier (string labels too, with three classes), 50 sentences give mteb's clustering (4% of
    them) two to cluster: all are scored."""
    tasks = [_folder(tmp_path, "Classification", _cls([0, 1], [0, 1, 0]), "TinyCls"),
             _folder(tmp_path, "Classification", _cls(["a", "b", "c"], ["c", "b", "a"]), "TinyCls3"),
             _folder(tmp_path, "Clustering", _clu(["x", "y"] * 25), "TinyClu")]
    assert run(tiny_bert, tasks, tmp_path / "r", tmp_path / "c") == 0
    assert set(scores(tmp_path / "r")) == {"TinyCls", "TinyCls3", "TinyClu"}


def test_cross_validated_classification_needs_every_fold_to_have_two_classes(tmp_path):
    from datasets import DatasetDict

    from evalkit.tasks.build import _check_classification
    from evalkit.tasks.formats import list_columns

    def data(labels):
        from datasets import Dataset

        return DatasetDict({"train": list_columns(Dataset.from_dict({"text": [str(i) for i in range(len(labels))], "label": labels}))})

    task = SimpleNamespace(train_split="train", is_cross_validation=True, n_splits=5, seed=42)
    _check_classification(task, tmp_path, data([0, 1] * 10), ["train"])
    with pytest.raises(EvalkitError, match="3 rows, but mteb's 5-fold cross-validation needs at least 5"):
        _check_classification(task, tmp_path, data([0, 1, 0]), ["train"])
    with pytest.raises(EvalkitError, match="the training part has one class"):
        _check_classification(task, tmp_path, data([0] * 19 + [1]), ["train"])
    with pytest.raises(EvalkitError, match="two classes labelled 'a' and 'b'"):  # a validation fold of two string classes
        _check_classification(task, tmp_path, data(["a", "b"] * 10), ["train"])
    with pytest.raises(EvalkitError, match="evaluates no other split"):
        _check_classification(task, tmp_path, {**data([0, 1] * 10), "test": data([0, 1])["train"]}, ["test"])


# ---------------------------------------------------------------- signals and a killed Ray driver

def test_sigterm_keeps_finished_units_and_says_how_to_resume(tiny_bert, tmp_path, reference, capsys, monkeypatch):
    """SIGTERM (a scheduler, `kill`) is Ctrl-C: the unit written stays, one line says how to resume,
    exit 130; the same command then finishes with the scores of a clean run."""
    import signal

    from evalkit import run as run_mod

    tasks = reference_tasks(tmp_path)
    out = tmp_path / "out"
    real = run_mod.write_evaluation

    def write_then_terminate(unit, ev):
        real(unit, ev)
        os.kill(os.getpid(), signal.SIGTERM)  # arrives while the loop goes on to the next unit

    monkeypatch.setattr(run_mod, "write_evaluation", write_then_terminate)
    old = signal.getsignal(signal.SIGTERM)
    try:
        rc = run(tiny_bert, tasks, out, tmp_path / "c")
    finally:
        signal.signal(signal.SIGTERM, old)
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("evalkit:")]
    assert rc == 130 and err == ["evalkit: interrupted; finished units are kept, run the same command again to resume"]
    assert list(scores(out)) == ["Sts"] and not list(out.rglob(".*.tmp"))
    monkeypatch.setattr(run_mod, "write_evaluation", real)
    assert run(tiny_bert, tasks, out, tmp_path / "c") == 0
    assert scores(out) == reference


def test_a_ray_driver_killed_at_random_moments_resumes_to_the_clean_scores(tiny_bert, tmp_path, reference):
    """`evalkit run --ray local` SIGKILLed (with its whole process group: driver and Ray) at random
    moments, then run again until it finishes: the results are those of a clean local run, and no
    half-written file is ever left. The run spends ~20 s starting (imports, Ray, the actor: Intel Xeon)
    and a fraction of a second on its 6 units, so one kill waits for a random number of its units to be
    written (mid-run, the actor evaluating the next) and the other lands at a random second of the start."""
    import random
    import signal
    import sys
    import time

    from tests.offline_run import assert_no_half_written, result_files, run_in_process

    pytest.importorskip("ray")
    tasks = reference_tasks(tmp_path) + [sts_folder(tmp_path, f"Sts{i}", [{**r, "sentence2": r["sentence2"] + f" {i}"} for r in STS_ROWS]) for i in range(3, 7)]
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "evalkit.cli", "run", "--model", str(tiny_bert), "--tasks", ",".join(map(str, tasks)), "--output", str(out),
            "--cache-dir", str(tmp_path / "c"), "--ray", "local", "--ray-workers", "1"]
    env = {**os.environ, "RAY_ADDRESS": ""}
    seed = int(os.environ.get("EVALKIT_KILL_SEED", time.time_ns() % 10_000))
    rng = random.Random(seed)
    written = lambda: len(result_files(out)) if out.exists() else 0  # noqa: E731
    kills = [("after units", rng.randint(1, len(tasks) - 2)), ("after seconds", rng.uniform(2, 9))]
    for how, when in kills:
        p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, env=env)
        start, before = time.monotonic(), written()
        while p.poll() is None and (written() - before < when if how == "after units" else time.monotonic() - start < when):
            time.sleep(0.01)
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        assert_no_half_written(out)
        if how == "after units":  # killed mid-run: some units written, not all (seed in the message to replay it)
            assert 0 < written() < len(tasks), (seed, written())
    run_in_process(*argv[3:], env={"RAY_ADDRESS": ""})  # the run that finishes: the same command, in this process (no start)
    got = scores(out)
    assert {k: got[k] for k in reference} == reference and len(got) == len(tasks)


def test_prediction_folders_of_killed_runs_are_swept(tmp_path, monkeypatch):
    """A run killed mid-unit leaves its temporary prediction folder; the next unit of any run removes
    the folders whose process is gone, and no other."""
    import subprocess
    import sys
    import tempfile

    from evalkit.items import PREFIX, ItemRecorder

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout.strip()
    gone, alive, other = tmp_path / f"{PREFIX}{dead}-abc", tmp_path / f"{PREFIX}1-abc", tmp_path / f"{PREFIX}oldstyle"
    for d in (gone, alive, other):
        d.mkdir()
    with ItemRecorder(object()) as rec:
        assert rec.folder.parent == tmp_path and rec.folder.is_dir()
    assert not gone.exists() and alive.exists() and other.exists() and not rec.folder.exists()
