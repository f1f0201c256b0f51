"""A task spec -> mteb's own task with its data loaded and checked (hub tasks load their own data)."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from evalkit.errors import EvalkitError
from evalkit.tasks.formats import (
    generic_task, label_kind, load_bitext, load_candidate_labels, load_classification, load_clustering, load_multilabel,
    load_pairs, load_regression, load_reranking, load_retrieval, load_sts, load_summarization, load_zeroshot,
    reranking_layout, reranking_split_present,
)
from evalkit.tasks.hub import hub_offline_mode, hub_reachable
from evalkit.tasks.registry import RETRIEVAL_TYPES, TaskSpec, data_dir_of

LAYOUT = {"InstructionRetrieval": "Retrieval", "InstructionReranking": "Reranking"}  # read as that type's folder
TRAINED = ("Classification", "MultilabelClassification", "Regression")  # a training split beside the evaluated ones


def split_present(folder: Path, typ: str, split: str) -> bool:
    typ = LAYOUT.get(typ, typ)
    if typ == "Reranking":
        return reranking_split_present(folder, split)
    if typ == "Retrieval":
        return (folder / "qrels" / f"{split}.tsv").is_file()
    if typ == "Clustering":
        return (folder / f"{split}.json").is_file()
    return (folder / f"{split}.jsonl").is_file()


def build_task(spec: TaskSpec):
    """The mteb task for `spec`, with local data loaded (hub tasks load their own data when run)."""
    import mteb

    if spec.source == "air-bench":
        from evalkit.tasks.air_bench import build as build_air_bench

        return build_air_bench(spec)
    if spec.source == "object":  # an mteb task object given as it is (evalkit.evaluate): its own data
        task = spec.task_object
        if not task.data_loaded:
            task.load_data()
        return task
    if spec.source == "hub":
        if not hub_offline_mode() and not hub_reachable():
            raise EvalkitError(
                f"task {spec.name} loads its data from the Hugging Face hub, which cannot be reached: "
                "mirror it into the data folder (EVALKIT_DATA), or set HF_HUB_OFFLINE=1 if it is in your HF cache"
            )
        try:
            kw = {}
            if spec.subsets:
                kw["hf_subsets"] = spec.subsets
            if spec.eval_splits:
                kw["eval_splits"] = spec.eval_splits
            return mteb.get_task(spec.mteb_name, **kw)
        except Exception as e:
            raise EvalkitError(f"task {spec.name}: mteb does not know {spec.mteb_name!r} ({e})") from e

    folder = data_dir_of(spec)
    if spec.mteb_task is not None or spec.data_dir is None:
        try:
            base = mteb.get_task(spec.mteb_name)
        except Exception as e:
            raise EvalkitError(f"task {spec.name}: mteb does not know {spec.mteb_name!r}: give a valid `mteb_task:` or none") from e
        if base.metadata.type != spec.type and not (spec.type == "Retrieval" and base.metadata.type == "Reranking"):
            raise EvalkitError(f"task {spec.name} is declared {spec.type} but mteb's {spec.mteb_name} is {base.metadata.type}")
        multilingual = base.metadata.is_multilingual
    else:
        base, multilingual = None, False

    if multilingual:
        subsets = spec.subsets or sorted(p.name for p in folder.iterdir() if p.is_dir())
        unknown = [s for s in subsets if s not in base.hf_subsets]
        if unknown:
            raise EvalkitError(f"task {spec.name}: subsets {unknown} are not among mteb's {spec.mteb_name} subsets")
        folders = {s: folder / s for s in subsets}
        for s, f in folders.items():
            if not f.is_dir():
                raise EvalkitError(f"task {spec.name}: missing subset folder {f}")
    else:
        subsets = ["default"]
        folders = {"default": folder}

    wanted = spec.eval_splits or (list(base.metadata.eval_splits) if base is not None else ["test", "validation", "dev"])
    first = next(iter(folders.values()))
    splits = [s for s in wanted if split_present(first, spec.type, s)]
    if not splits:
        expected = ", ".join(wanted)
        raise EvalkitError(f"task {spec.name}: no data file for any of its splits ({expected}) in {first}")
    if spec.eval_splits:
        for s in spec.eval_splits:
            if not split_present(first, spec.type, s):
                raise EvalkitError(f"task {spec.name}: missing data file for split {s} in {first}")

    if base is None:
        attrs = {}
        if spec.type == "ZeroShotClassification":  # mteb asks the task for its classes' texts
            try:
                candidates = load_candidate_labels(first)
            except EvalkitError as e:
                raise EvalkitError(f"task {spec.name}: {e}") from None
            attrs = {"input_column_name": "text", "get_candidate_labels": lambda self: list(candidates)}
        task = generic_task(spec, splits, attrs=attrs)
    else:
        kw: dict[str, Any] = {"eval_splits": splits}
        if multilingual:
            kw["hf_subsets"] = subsets
        task = mteb.get_task(spec.mteb_name, **kw)
        if spec.name != spec.mteb_name:
            task.metadata = task.metadata.model_copy(update={"name": spec.name})

    try:  # each file's own checks, then what mteb's sampling of this task needs; all before any model loads
        data = {s: _load_subset(task, spec.type, f, splits) for s, f in folders.items()}
        for f, d in zip(folders.values(), data.values()):
            _check_sampling(task, spec.type, f, d, splits)
    except EvalkitError as e:
        raise EvalkitError(f"task {spec.name}: {e}") from None
    if spec.type == "Summarization" and base is None:  # mteb normalises the relevance to [0, 1] with the task's range
        rel = [x for d in data.values() for split in d.values() for r in split["relevance"] for x in r]
        task.min_score, task.max_score = min(rel), max(rel)
    if spec.type in RETRIEVAL_TYPES:
        task.dataset = data
    else:
        task.dataset = data if multilingual else data["default"]
    if len(subsets) > 1:
        task._evaluate_subset = FreshStatePerSubset(task)
    task.data_loaded = True
    return task


class FreshStatePerSubset:
    """A mirrored subset is scored as mteb's task limited to that subset (the MANIFEST's recipe,
    `mteb.get_task(name, hf_subsets=[subset])`): the task's random state (clustering's and
    classification's sampling) starts from its seed for every subset, as it does in a new task.
    In one mteb task the subsets draw in turn from one state, so a subset's score would depend on
    which subsets run before it (ClusTREC-Covid's `title` follows `title and abstract`)."""

    def __init__(self, task):
        self.task = task
        self.evaluate_subset = task._evaluate_subset

    def __call__(self, *args, **kwargs):
        from mteb._set_seed import _set_seed

        self.task.rng_state, self.task.np_rng = _set_seed(self.task.seed)
        return self.evaluate_subset(*args, **kwargs)


def _load_subset(task, typ: str, folder: Path, splits: list[str]):
    from datasets import DatasetDict

    if typ in LAYOUT:
        return _instruction_splits(typ, folder, splits)
    if typ == "Retrieval":
        return {s: load_retrieval(folder, s) for s in splits}
    if typ == "Reranking":
        return {s: load_reranking(folder, s) for s in splits}
    if typ == "BitextMining":
        return DatasetDict({s: load_bitext(folder, s) for s in splits})
    if typ == "ZeroShotClassification":
        return DatasetDict({s: load_zeroshot(folder, s, task.get_candidate_labels()) for s in splits})
    if typ in TRAINED:
        load = {"Classification": load_classification, "MultilabelClassification": load_multilabel, "Regression": load_regression}[typ]
        needed = list(dict.fromkeys([getattr(task, "train_split", "train"), *splits]))
        return DatasetDict({s: load(folder, s) for s in needed})
    if typ == "Summarization":
        lo, hi = getattr(task, "min_score", None), getattr(task, "max_score", None)
        return DatasetDict({s: load_summarization(folder, s, lo, hi) for s in splits})
    if typ == "STS":
        lo, hi = getattr(task, "min_score", 0), getattr(task, "max_score", 5)
        return DatasetDict({s: load_sts(folder, s, lo, hi) for s in splits})
    if typ == "PairClassification":
        return DatasetDict({s: load_pairs(folder, s) for s in splits})
    if typ == "Clustering":
        return DatasetDict({s: load_clustering(folder, s) for s in splits})
    raise EvalkitError(f"task type {typ} cannot be read from a local folder yet: give `source: hub`")


def _instruction_splits(typ: str, folder: Path, splits: list[str]) -> dict:
    """An instruction task's folder: the retrieval layout (InstructionReranking: with top_ranked.jsonl),
    whose queries carry the `instruction` mteb joins to them."""
    if typ == "InstructionReranking" and reranking_layout(folder) != "retrieval":
        raise EvalkitError(
            f"{folder}: an InstructionReranking folder is in the retrieval layout (queries.jsonl with `instruction`, "
            "qrels/, top_ranked.jsonl): {query, positive, negative} rows carry no instruction"
        )
    data = {s: (load_reranking if typ == "InstructionReranking" else load_retrieval)(folder, s) for s in splits}
    if not any("instruction" in d["queries"].column_names for d in data.values()):
        raise EvalkitError(
            f"{folder / 'queries.jsonl'}: no query has an `instruction`: give each query its instruction, or declare the task "
            f"{LAYOUT[typ]}"
        )
    return data


def _check_sampling(task, typ: str, folder: Path, data, splits: list[str]) -> None:
    """Data that every file check passes but that mteb's sampling of `task` cannot use: it would
    crash (scikit-learn's traceback) or give a meaningless score."""
    if typ == "Classification":
        _check_classification(task, folder, data, splits)
    elif typ == "Clustering":
        frac = getattr(task, "max_fraction_of_documents_to_embed", None)
        cap = getattr(task, "max_document_to_embed", None)
        for s in splits:
            n = len(data[s])
            if frac is not None:
                k, rule = min(n, int(frac * n)), f"a fraction {frac} of the sentences"
                need = math.ceil(2 / frac)
            elif cap is not None:
                k, rule, need = min(n, int(cap)), f"at most {cap} sentences", 2
            else:
                continue
            if k < 2:
                raise EvalkitError(
                    f"{folder / f'{s}.json'}: mteb's clustering of this task embeds {rule}, here {k} of {n}: "
                    f"it needs at least {need} sentences to cluster two"
                )


def _check_classification(task, folder: Path, data, splits: list[str]) -> None:
    """mteb trains a classifier on `samples_per_label` texts per class of the training split (all a
    class has when it has fewer), `n_experiments` times: that works with any number of rows, but
    scikit-learn needs 2 classes in every training set, and an evaluated split of exactly two classes
    is also scored by average precision with 1 as the positive label."""
    train = getattr(task, "train_split", "train")
    where = folder / f"{train}.jsonl"
    labels = data[train]["label"]
    classes = set(labels)
    if len(classes) < 2:
        raise EvalkitError(
            f"{where}: the training split has one class ({labels[0]!r}): a classifier needs at least 2 classes to train on"
        )
    kinds = {label_kind(labels[0])}
    for s in splits:
        if s != train and data[s]["label"] and label_kind(data[s]["label"][0]) not in kinds:
            raise EvalkitError(
                f"{folder / f'{s}.jsonl'}: its labels are {label_kind(data[s]['label'][0])}s but the training split's "
                f"({where.name}) are {label_kind(labels[0])}s: give the classes the same labels in both"
            )
    for s in splits:
        if s != train:
            _check_two_classes(folder / f"{s}.jsonl", data[s]["label"])
    if getattr(task, "is_cross_validation", False):
        from sklearn.model_selection import KFold

        k = int(getattr(task, "n_splits", 5))
        for s in splits:
            if s != train:
                raise EvalkitError(f"{folder / f'{s}.jsonl'}: this task is cross-validated on its {train} split, so it evaluates no other split")
        if len(labels) < k:
            raise EvalkitError(f"{where}: {len(labels)} rows, but mteb's {k}-fold cross-validation needs at least {k}")
        folds = KFold(n_splits=k, shuffle=True, random_state=getattr(task, "seed", 42)).split(range(len(labels)))
        for i, (tr, va) in enumerate(folds):
            if len({labels[j] for j in tr}) < 2:
                raise EvalkitError(
                    f"{where}: in fold {i + 1} of mteb's {k}-fold cross-validation the training part has one class: "
                    "give every class more examples"
                )
            _check_two_classes(where, [labels[j] for j in va])


def _check_two_classes(where: Path, labels) -> None:
    """mteb adds average precision for an evaluated split of exactly two classes, with scikit-learn's
    default positive label 1: other labels (strings, 0 and 2, ...) end in a traceback."""
    classes = set(labels)
    if len(classes) == 2 and not (all(label_kind(c) == "number" for c in classes) and 1 in classes):
        a, b = sorted(classes, key=str)
        raise EvalkitError(
            f"{where}: two classes labelled {a!r} and {b!r}: mteb scores a two-class split's average precision "
            "with 1 as the positive label, so label the classes 0 and 1"
        )
