"""evalkit: evaluate text embedders and rerankers with mteb's official scoring, fast.

    evalkit.evaluate(model, tasks, ...)   a run from Python (evalkit/api.py); `evalkit run` on the command line
"""
from evalkit.api import Results, evaluate
from evalkit.errors import EvalkitError
from evalkit.models.flag import FlagModel
from evalkit.models.icl import FlagICLModel
from evalkit.models.m3 import BGEM3FlagModel
from evalkit.models.reranker import FlagLLMReranker, FlagReranker

__all__ = ["BGEM3FlagModel", "EvalkitError", "FlagICLModel", "FlagModel", "FlagReranker", "FlagLLMReranker", "Results", "evaluate"]
__version__ = "0.1.0"
