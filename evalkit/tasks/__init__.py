"""Tasks: the registry (YAML in tasks/, task folders), the local data formats, and the mteb task
built for a spec with its data loaded and checked.

A task spec names an mteb task (for metadata, splits and evaluator settings) and where its data
come from: `local` (a folder in the MANIFEST formats), `hub` (mteb loads it) or `air-bench` (an
AIR-Bench dataset, from a hub snapshot or the hub: air_bench.py). Local data are checked row by row and
handed to mteb in the shape its evaluator reads after its own dataset_transform, then marked loaded.

registry.py   TaskSpec, Registry, task folders, data_root
formats.py    readers of the MANIFEST formats, the generic mteb task for a user's own folder
hub.py        whether the Hugging Face hub can be used
build.py      build_task: spec -> mteb task
air_bench.py  AIR-Bench datasets as retrieval tasks
air_bench_metrics.py  AIR-Bench's metrics (its package's definitions)
"""
from evalkit.tasks.build import build_task
from evalkit.tasks.formats import generic_task, read_jsonl, retrieval_split
from evalkit.tasks.hub import hub_offline_mode, hub_reachable
from evalkit.tasks.registry import PROJECT_ROOT, TYPES, Registry, TaskSpec, data_dir_of, data_root, task_from_folder, tasks_dir

__all__ = [
    "PROJECT_ROOT", "TYPES", "Registry", "TaskSpec", "build_task", "data_dir_of", "data_root", "generic_task", "hub_offline_mode",
    "hub_reachable", "read_jsonl", "retrieval_split", "task_from_folder", "tasks_dir",
]
