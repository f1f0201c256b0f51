"""Whether the Hugging Face hub can be used for task data (asked once per process)."""
from __future__ import annotations

import os

_HUB_STATE: dict[str, bool] = {}


def hub_offline_mode() -> bool:
    return any(os.environ.get(v, "0") not in ("0", "", "false", "False") for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub answers a TCP connect (asked once per process)."""
    import socket
    from urllib.parse import urlparse

    url = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    if url not in _HUB_STATE:
        host = urlparse(url).hostname or "huggingface.co"
        try:
            socket.create_connection((host, 443), timeout=timeout).close()
            _HUB_STATE[url] = True
        except OSError:
            _HUB_STATE[url] = False
    return _HUB_STATE[url]


def hub_load_error(spec, err: BaseException):
    """The one line for a task whose data the hub could not give."""
    from evalkit.errors import EvalkitError

    return EvalkitError(
        f"task {spec.name}: its data could not be loaded from the Hugging Face hub ({type(err).__name__}): "
        "mirror it into the data folder (EVALKIT_DATA) or run where the hub is reachable"
    )
