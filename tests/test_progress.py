import io
import sys

from latentqa import progress


def test_progress_in_a_log_is_one_plain_line_per_update(monkeypatch):
    log = io.StringIO()
    monkeypatch.setattr(sys, "stderr", log)  # not a terminal
    monkeypatch.setattr(progress, "LOG_INTERVAL_S", 0.0)
    for _ in progress.progress_bar(range(3), desc="work", unit="step"):
        pass
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue() and len(lines) >= 2
    assert lines[-1].startswith("work: 100%") and "3/3" in lines[-1]


def test_nested_bars_leave_no_cursor_moves_in_a_log(monkeypatch):
    log = io.StringIO()
    monkeypatch.setattr(sys, "stderr", log)
    outer = progress.progress_bar(total=1, desc="outer")
    for _ in progress.progress_bar(range(2), desc="inner"):
        pass
    outer.update(1)
    outer.close()
    assert "\x1b" not in log.getvalue() and all(line.strip() for line in log.getvalue().splitlines())
