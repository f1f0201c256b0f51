"""Progress you can watch: what a run is doing, texts done of total, tokens per second and an ETA.

On a terminal: one live line, redrawn in place, for the current phase of the current unit (reading
data, loading a model, encoding with a bar, mteb's scoring). Elsewhere (CI logs, files): the same
status as a plain line whenever nothing has been printed for `EVALKIT_PROGRESS_SECONDS` seconds
(default 10), so a long phase shows up at least that often and a short one never clutters the log.
Finished units get a line of their own either way. Everything goes to stderr.
"""
from __future__ import annotations

import os
import sys
import threading
import time


def hms(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s"


class Progress:
    def __init__(self, stream=None, every: float | None = None):
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.every = float(os.environ.get("EVALKIT_PROGRESS_SECONDS", 10)) if every is None else float(every)
        self.label = ""
        self.position = ""
        self._status: str | None = None  # the current phase, as a line
        self._since = time.perf_counter()  # when that phase began
        self._last = time.perf_counter()  # when a line was last printed
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- output
    def _emit(self, text: str, live: bool) -> None:
        with self._lock:
            if self.tty:
                self.stream.write("\r\033[K" + text + ("" if live else "\n"))
            else:
                self.stream.write(text + "\n")
            self.stream.flush()
            self._last = time.perf_counter()

    def line(self, text: str) -> None:
        """A line that stays (a finished unit, a note); the current phase ends with it."""
        self._status = None
        self._emit(text, live=False)

    def _set(self, status: str, force: bool = False) -> None:
        self._status = status
        if self.tty:
            if force or time.perf_counter() - self._last >= 0.2:
                self._emit(status, live=True)
        elif self._thread is None and self.every > 0:
            self._thread = threading.Thread(target=self._heartbeat, name="evalkit-progress", daemon=True)
            self._thread.start()

    def _heartbeat(self) -> None:
        while not self._stop.wait(min(1.0, self.every / 4)):
            status = self._status
            if status is not None and time.perf_counter() - self._last >= self.every:
                self._emit(status, live=False)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
            self._thread = None
        if self.tty and self._status is not None:
            self._emit("", live=False)

    # -- events
    def unit_start(self, label: str, position: str = "") -> None:
        self.label, self.position = label, position
        self._since = time.perf_counter()

    def phase(self, what: str) -> None:
        self._since = time.perf_counter()
        self._set(f"{self.position}{self.label}: {what}", force=True)

    def tracker(self, total: int, what: str = "texts"):
        """A callback for the encoder core: on_batch(rows, tokens), reporting `total` items."""
        return _Tracker(self, total, what)


class _Tracker:
    def __init__(self, progress: Progress, total: int, what: str):
        self.p, self.total, self.what = progress, int(total), what
        self.done = self.tokens = 0
        self.t0 = time.perf_counter()

    def __call__(self, rows: int, tokens: int) -> None:
        self.done += int(rows)
        self.tokens += int(tokens)
        self.p._set(self.text(time.perf_counter()), force=self.done >= self.total)

    def text(self, now: float) -> str:
        el = max(now - self.t0, 1e-9)
        rate = self.done / el
        eta = hms((self.total - self.done) / rate) if rate > 0 else "?"
        bar = ""
        if self.p.tty:
            filled = int(20 * self.done / max(1, self.total))
            bar = "[" + "#" * filled + "." * (20 - filled) + "] "
        return (f"{self.p.position}{self.p.label}: encoding {bar}{self.done}/{self.total} {self.what}, "
                f"{self.tokens / el:,.0f} tokens/s, ETA {eta}")
