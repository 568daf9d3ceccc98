"""Ctrl-C during training (`training/interrupt.py`): a process that ignores Ctrl-C keeps ignoring it, and the handler
is ours only while training. A stop mid-accumulation that resumes exactly is tested end to end in test_trainer.py."""
import signal

from accelerate import Accelerator

from latentqa.training.interrupt import stop_requests


def test_a_process_that_ignores_ctrl_c_keeps_ignoring_it():
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with stop_requests(Accelerator(cpu=True)) as stop_requested:
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN and not stop_requested()
        signal.signal(signal.SIGINT, signal.default_int_handler)
        with stop_requests(Accelerator(cpu=True)) as stop_requested:
            assert signal.getsignal(signal.SIGINT) is not signal.default_int_handler  # ours, while training
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, previous)
