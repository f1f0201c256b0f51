"""Result files: mteb's TaskResult JSON in mteb's ResultCache layout, written atomically.

<output>/<model>/<revision>/<Task>.json, and for a variant of the same model (few-shot settings,
a reranked first stage): <output>/<model>/<revision>/experiments/<variant>/<Task>.json.
Files are written to a temporary name, fsync'ed and renamed, so a reader never sees half a file.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from evalkit.errors import EvalkitError


def result_dir(output: Path, model: str, revision: str, variant: str | None = None) -> Path:
    d = Path(output) / model.replace("/", "__").replace(" ", "_") / revision
    return d / "experiments" / variant if variant else d


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` to `path` all or nothing: a temporary file beside it, fsync'ed, then renamed.

    The file gets the usual permissions under the user's umask (0o666 & ~umask: the temporary file
    is created with mode 0o666, not mkstemp's 0o600). Any OS error (a full disk, a read-only or
    unwritable folder) is one EvalkitError line saying what could not be written and where; the
    temporary file is removed and a previous `path` is left unchanged.
    """
    import secrets

    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        for attempt in range(100):
            tmp = str(path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp")  # .*.tmp: swept by the runner
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
                break
            except FileExistsError:
                if attempt == 99:
                    raise
    except OSError as e:
        raise EvalkitError(f"cannot write to {path.parent} ({e.strerror or e}): choose a writable --output folder") from None
    try:
        try:
            data = memoryview(text.encode("utf-8"))
            while data:
                data = data[os.write(fd, data):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError):
            raise EvalkitError(
                f"cannot write {path} ({e.strerror or e}): nothing was changed there; "
                "free some space or choose a writable folder, then run the same command again"
            ) from None
        raise
    try:  # make the rename durable; the file is already complete and in place
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n")


def round_scores(node, n: int = 6):
    """Every float in a scores tree rounded to `n` decimals, as mteb's TaskResult.to_disk writes them."""
    if isinstance(node, dict):
        return {k: round_scores(v, n) for k, v in node.items()}
    if isinstance(node, list):
        return [round_scores(v, n) for v in node]
    return round(node, n) if isinstance(node, float) else node


def result_document(result, evalkit_meta: dict) -> dict:
    """The one result document of every unit: mteb's TaskResult as JSON (scores rounded as mteb
    writes them) plus an `evalkit` key with what made it (model, variant, versions, timings)."""
    doc = result.model_dump(mode="json")
    doc["date"] = result.date.timestamp() if result.date else None
    doc["scores"] = round_scores(doc["scores"], 6)
    doc["evalkit"] = {**evalkit_meta, "versions": versions()}
    return doc


def versions() -> dict:
    import importlib.metadata as md

    out = {}
    for pkg in ("evalkit", "mteb", "torch", "transformers", "sentence-transformers", "datasets", "scikit-learn", "numpy"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


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
    return sum(vals) / len(vals) if vals else float("nan")  # nan: an AIR-Bench task searched but not scored


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


def published_scores() -> dict:
    """The published scores beside the data (../shared/data/published_scores.json), or {}."""
    from evalkit.tasks import data_root

    root = data_root()
    if root is None or not (root / "published_scores.json").is_file():
        return {}
    try:
        return json.loads((root / "published_scores.json").read_text())
    except ValueError:
        return {}


def published_for(pub: dict, task: str, result_name: str) -> dict[str, float]:
    """{'split/subset': score x100} of the published record, if any."""
    return {k: v["main_score"] for k, v in pub.get(task, {}).get(result_name, {}).items()}
