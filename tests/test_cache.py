"""The persistent embedding cache: keys, reuse across runs, concurrency, CLI."""
from __future__ import annotations

import multiprocessing as mp

import numpy as np
import pytest

from evalkit.cache import EmbeddingCache
from evalkit.cli import main
from evalkit.models.embedder import Embedder
from tests.conftest import write_jsonl


def test_vectors_come_back_bit_identical_and_are_not_reencoded(tiny_bert, tmp_path):
    cache = EmbeddingCache(tmp_path / "c")
    e1 = Embedder(tiny_bert, cache=cache)
    a = e1.embed(["the bank", "a card", "the bank"])
    assert e1.counts == {"encoded": 2, "cached": 0, "duplicates": 1}
    e2 = Embedder(tiny_bert, cache=EmbeddingCache(tmp_path / "c"))
    b = e2.embed(["a card", "the bank", "the river"])
    assert e2.counts["encoded"] == 1 and e2.counts["cached"] == 2
    np.testing.assert_array_equal(b[0], a[1])
    np.testing.assert_array_equal(b[1], a[0])


def test_cached_run_never_loads_the_model(tiny_bert, tmp_path):
    Embedder(tiny_bert, cache=EmbeddingCache(tmp_path / "c")).embed(["the bank", "a card"])
    e = Embedder(tiny_bert, cache=EmbeddingCache(tmp_path / "c"))
    e.embed(["a card"])
    assert e._core is None


@pytest.mark.parametrize("change", [{"pooling": "mean"}, {"max_length": 16}, {"dtype": "bf16"}, {"normalize": False}])
def test_everything_that_changes_a_vector_changes_the_key(tiny_bert, tmp_path, change):
    base = Embedder(tiny_bert, cache=EmbeddingCache(tmp_path / "c"))
    other = Embedder(tiny_bert, cache=EmbeddingCache(tmp_path / "c"), **change)
    assert base.namespace != other.namespace
    base.embed(["the bank"])
    other.embed(["the bank"])
    assert other.counts["cached"] == 0


def _writer(args):
    path, root, offset = args
    e = Embedder(path, cache=EmbeddingCache(root), batch_size=8)
    texts = [f"the bank {i}" for i in range(offset, offset + 300)]
    return e.embed(texts).sum()


def test_two_processes_write_the_same_cache(tiny_bert, tmp_path):
    root = tmp_path / "c"
    with mp.get_context("spawn").Pool(2) as pool:
        pool.map(_writer, [(str(tiny_bert), str(root), 0), (str(tiny_bert), str(root), 150)])
    e = Embedder(tiny_bert, cache=EmbeddingCache(root))
    e.embed([f"the bank {i}" for i in range(450)])
    assert e.counts == {"encoded": 0, "cached": 450, "duplicates": 0}


def test_cache_cli_stats_and_clear(tiny_bert, tmp_path, capsys):
    task = tmp_path / "t"
    write_jsonl(task / "test.jsonl", [{"sentence1": f"the bank {i}", "sentence2": f"a card {i}", "score": i % 5} for i in range(10)])
    (task / "task.yaml").write_text("name: T\ntype: STS\n")
    c = str(tmp_path / "c")
    assert main(["run", "--model", str(tiny_bert), "--tasks", str(task), "--output", str(tmp_path / "r"), "--cache-dir", c]) == 0
    capsys.readouterr()
    assert main(["cache", "stats", "--cache-dir", c]) == 0
    assert "total: 20 entries" in capsys.readouterr().out
    assert main(["cache", "clear", "--cache-dir", c]) == 0
    assert "cleared 20 vectors" in capsys.readouterr().out
    assert main(["run", "--model", str(tiny_bert), "--tasks", str(task), "--output", str(tmp_path / "r2"), "--no-cache", "--cache-dir", c]) == 0
    assert main(["cache", "stats", "--cache-dir", c]) == 0
    assert "total: 0 entries" in capsys.readouterr().out


def test_a_task_instruction_is_part_of_the_key(tiny_bert, tmp_path):
    """The key is the exact input text: the same query with and without an instruction are two vectors."""
    e = Embedder(tiny_bert, cache=EmbeddingCache(tmp_path / "c"))
    e.embed(["the bank"])
    e.embed(["Represent this sentence for searching relevant passages: the bank"])
    assert e.counts["encoded"] == 2


def test_opening_waits_out_a_concurrent_wal_switch(tmp_path, monkeypatch):
    """SQLite answers "database is locked" at once (no busy wait) while another process switches a
    new file to WAL mode: the cache waits that out instead of failing the run."""
    import sqlite3

    from evalkit.cache import EmbeddingCache

    real_connect = sqlite3.connect
    calls = {"n": 0}

    class Locked:
        def execute(self, *a):
            raise sqlite3.OperationalError("database is locked")

        def close(self):
            pass

    def connect(*a, **kw):
        calls["n"] += 1
        return Locked() if calls["n"] < 3 else real_connect(*a, **kw)

    monkeypatch.setattr(sqlite3, "connect", connect)
    cache = EmbeddingCache(tmp_path / "c")
    cache.db.execute("SELECT count(*) FROM vectors")
    assert calls["n"] == 3


def test_a_cache_made_before_keeps_working(tmp_path):
    """Caches used to be a WITHOUT ROWID table (rows in the key b-tree); new ones are a rowid table.
    A file of the old layout is read and written as it is."""
    import sqlite3

    (tmp_path / "c").mkdir()
    old = sqlite3.connect(tmp_path / "c" / "embeddings.sqlite3")
    old.execute("CREATE TABLE vectors (ns TEXT NOT NULL, key BLOB NOT NULL, vec BLOB NOT NULL, PRIMARY KEY (ns, key)) WITHOUT ROWID")
    old.close()
    cache = EmbeddingCache(tmp_path / "c")
    vecs = np.arange(12, dtype=np.float32).reshape(3, 4)
    cache.put_many("n", ["a", "b", "c"], vecs)
    cache.put_many("n", ["b"], vecs[:1])
    got = cache.get_many("n", ["c", "b", "x"])
    assert sorted(got) == [0, 1] and np.array_equal(got[0], vecs[2]) and np.array_equal(got[1], vecs[0])
    sql = cache.db.execute("SELECT sql FROM sqlite_master WHERE name = 'vectors'").fetchone()[0]
    assert "WITHOUT ROWID" in sql
    # and a new cache is the rowid layout
    assert "WITHOUT ROWID" not in EmbeddingCache(tmp_path / "d").db.execute("SELECT sql FROM sqlite_master WHERE name = 'vectors'").fetchone()[0]
