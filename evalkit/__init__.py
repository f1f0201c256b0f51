"""evalkit: evaluate text embedders and rerankers with mteb's official scoring, fast."""
from evalkit.errors import EvalkitError
from evalkit.models.flag import FlagModel

__all__ = ["EvalkitError", "FlagModel"]
__version__ = "0.1.0"
