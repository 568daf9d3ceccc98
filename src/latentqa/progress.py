"""Progress bars: tqdm's redrawn bar on a terminal; in a file or a CI log, where carriage returns would pile up
into one endless line, a plain line at most every 30 seconds and one at the end."""
from __future__ import annotations

import re
import sys

from tqdm.auto import tqdm

LOG_INTERVAL_S = 30.0
_CURSOR_MOVES = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class _Lines:
    """A stream for tqdm that turns each redraw (carriage return + bar) into a line of its own."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text: str) -> None:
        text = _CURSOR_MOVES.sub("", text.replace("\r", "")).strip()  # nested bars move the cursor
        if text:
            self.stream.write(text + "\n")

    def flush(self) -> None:
        self.stream.flush()


def on_terminal() -> bool:
    return sys.stderr.isatty()


def progress_bar(iterable=None, **kwargs) -> tqdm:
    """`tqdm(iterable, **kwargs)`, in line form when stderr is not a terminal."""
    if on_terminal():
        return tqdm(iterable, **kwargs)
    return tqdm(iterable, **{"file": _Lines(sys.stderr), "mininterval": LOG_INTERVAL_S, "ascii": True, **kwargs})
