"""Ctrl-C during training: a request to stop at the next optimizer step, agreed on by every process."""
from __future__ import annotations

import logging
import signal
import threading
from contextlib import contextmanager

from accelerate import Accelerator

log = logging.getLogger(__name__)


@contextmanager
def stop_requests(accelerator: Accelerator):
    """Turn the first Ctrl-C into a request, answered at the next optimizer step (every process agrees on
    which); a second Ctrl-C interrupts at once. Yields a function that says whether a stop was requested."""
    requested = threading.Event()

    def on_sigint(signum, frame):
        requested.set()
        signal.signal(signal.SIGINT, signal.default_int_handler)
        log.warning("Ctrl-C: stopping after this optimizer step (Ctrl-C again to stop at once, unsaved)")

    def stop_requested() -> bool:
        if requested.is_set():
            accelerator.set_trigger()
        return accelerator.check_trigger()

    # Only the main thread may set handlers; a process that ignores SIGINT (started in the background) keeps
    # ignoring it.
    previous = signal.getsignal(signal.SIGINT)
    installs = threading.current_thread() is threading.main_thread() and previous is not signal.SIG_IGN
    if installs:
        signal.signal(signal.SIGINT, on_sigint)
    try:
        yield stop_requested
    finally:
        if installs:
            signal.signal(signal.SIGINT, previous)
