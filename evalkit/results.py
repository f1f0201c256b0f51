"""Result files: mteb's TaskResult JSON in mteb's ResultCache layout, written atomically.

<output>/<model>/<revision>/<Task>.json, and for a variant of the same model (few-shot settings,
a reranked first stage): <output>/<model>/<revision>/experiments/<variant>/<Task>.json.
Files are written to a temporary name, fsync'ed and renamed, so a reader never sees half a file.
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from evalkit.errors import EvalkitError


def result_dir(output: Path, model: str, revision: str, variant: str | None = None) -> Path:
    d = Path(output) / model.replace("/", "__").replace(" ", "_") / revision
    return d / "experiments" / variant if variant else d


def atomic_write_text(path: Path, text: str) -> None:
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise EvalkitError(f"cannot write to {path.parent} ({e.strerror}): choose a writable --output folder") from e
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n")


def read_result(path: Path) -> dict | None:
    """A complete, valid result file's content, or None (missing, partial or not a result)."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("scores"), dict) or "task_name" not in doc:
        return None
    for split in doc["scores"].values():
        if not isinstance(split, list) or not split or any("main_score" not in s for s in split):
            return None
    return doc


def main_scores(doc: dict) -> dict[str, float]:
    """{'split/subset': main_score} of a result document."""
    return {f"{split}/{s.get('hf_subset', 'default')}": s["main_score"] for split, ss in doc["scores"].items() for s in ss}


def mean_main_score(doc: dict) -> float:
    vals = list(main_scores(doc).values())
    return sum(vals) / len(vals)


@dataclass
class ResultRecord:
    model: str
    revision: str
    variant: str | None
    task: str
    path: Path
    doc: dict

    @property
    def score(self) -> float:
        return mean_main_score(self.doc)


def is_result_name(name: str) -> bool:
    """<Task>.json, not a temporary file, model_meta.json, per-item scores or a first-stage run file."""
    return (
        name.endswith(".json") and not name.startswith(".") and name != "model_meta.json"
        and not name.endswith(".items.json") and ".run_top" not in name
    )


def scan(results: Path) -> list[ResultRecord]:
    """Every valid result file under `results` (the folder of model folders)."""
    out = []
    results = Path(results)
    if not results.is_dir():
        return out
    for path in sorted(results.glob("*/*/*.json")) + sorted(results.glob("*/*/experiments/*/*.json")):
        if not is_result_name(path.name):
            continue
        doc = read_result(path)
        if doc is None:
            continue
        rel = path.relative_to(results).parts
        variant = rel[3] if len(rel) == 5 else None
        out.append(ResultRecord(rel[0], rel[1], variant, doc["task_name"], path, doc))
    return out
