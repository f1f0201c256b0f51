"""The one exception a user sees: a single line saying what is wrong and what to do."""


class EvalkitError(Exception):
    """Bad input or an unusable environment. The CLI prints ``str(err)`` on one line and exits 2."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))
