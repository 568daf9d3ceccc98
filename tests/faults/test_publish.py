"""A kill at any moment of a folder replacement leaves the old version or the new one, whole; a run's folder with
every leftover a kill can leave is tidied back to complete checkpoints."""
import json
import os
import subprocess
import sys

import pytest

from latentqa import atomic
from latentqa.training.checkpoints import keep_metrics_until, list_checkpoints, tidy


class Killed(BaseException):
    pass


def _folder(path, version):
    path.mkdir()
    for name in ("a", "b"):
        (path / name).write_text(f"{version}-{name}")
    return path


def _version(path):
    texts = {p.name: p.read_text() for p in path.iterdir()}
    versions = {text.split("-")[0] for text in texts.values()}
    assert set(texts) == {"a", "b"} and len(versions) == 1, texts  # whole: both files, one version
    return versions.pop()


@pytest.mark.parametrize("killed_at", [0, 1, 2])
@pytest.mark.parametrize("existing", [True, False])
def test_a_replacement_killed_at_each_rename_recovers_whole(tmp_path, monkeypatch, killed_at, existing):
    final = tmp_path / "best"
    if existing:
        _folder(final, "old")
    tmp = _folder(tmp_path / "best.tmp", "new")
    calls = []
    real = os.replace

    def replace(src, dst):
        if len(calls) == killed_at:
            raise Killed
        calls.append((src, dst))
        real(src, dst)

    monkeypatch.setattr(atomic.os, "replace", replace)
    try:
        atomic.replace_folder(tmp, final)
        completed = True
    except Killed:
        completed = False
    monkeypatch.setattr(atomic.os, "replace", real)
    atomic.recover(final)
    renames = 2 if existing else 1  # tmp → new, (final → old), new → final
    if completed:
        assert len(calls) == renames + 1 and _version(final) == "new"
    elif killed_at == 0:  # before the new version was complete in its place: the old one stays
        assert _version(final) == "old" if existing else not final.exists()
    else:
        assert _version(final) == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == (["best"] if final.exists() else []) + \
        (["best.tmp"] if killed_at == 0 and not completed else [])


def test_tidy_finishes_every_interrupted_replacement_and_removes_unfinished_saves(tmp_path):
    out = tmp_path / "run"
    checkpoints = out / "checkpoints"
    checkpoints.mkdir(parents=True)
    _folder(checkpoints / "step-00000001", "one")
    _folder(checkpoints / "step-00000002.old", "two")  # killed between the renames of the replacement before
    _folder(checkpoints / "step-00000003.tmp", "three")  # killed while saving
    _folder(checkpoints / "step-00000004", "four")
    _folder(checkpoints / "step-00000004.new", "four2")  # killed before the new version took the name
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    _folder(checkpoints / f".step-00000005.trash-{int(dead.stdout)}-0a1b", "five")  # killed while pruning
    _folder(checkpoints / f".step-00000006.trash-{os.getpid()}-0a1b", "six")  # a live writer's: kept
    _folder(out / "best.new", "best")
    (out / "best.tmp").mkdir()
    tidy(out)
    assert [p.name for p in list_checkpoints(out)] == ["step-00000001", "step-00000002", "step-00000004"]
    assert [_version(p) for p in list_checkpoints(out)] == ["one", "two", "four2"]
    assert sorted(p.name for p in checkpoints.iterdir()) == \
        [f".step-00000006.trash-{os.getpid()}-0a1b", "step-00000001", "step-00000002", "step-00000004"]
    assert sorted(p.name for p in out.iterdir()) == ["best", "checkpoints"] and _version(out / "best") == "best"


def test_resume_keeps_the_metrics_rows_up_to_its_checkpoint(tmp_path):
    path = tmp_path / "metrics.jsonl"
    rows = [{"kind": "train", "step": 1}, {"kind": "train", "step": 2}, {"kind": "eval", "step": 2},
            {"kind": "train", "step": 3}, {"kind": "eval", "step": 3}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"kind": "tra')  # a row cut by a kill
    keep_metrics_until(path, step=3, evaluated_step=2)  # saved at step 3 before its evaluation
    assert [json.loads(line) for line in path.read_text().splitlines()] == rows[:4]


def test_resume_before_any_checkpoint_starts_anew_and_a_fresh_run_refuses_checkpoints(tmp_path):
    from latentqa.config import ConfigError
    from latentqa.training.checkpoints import checkpoint_dir, resolve_resume

    assert resolve_resume(tmp_path, "latest") is None and resolve_resume(tmp_path, None) is None
    (checkpoint_dir(tmp_path, 3) / "sub").mkdir(parents=True)
    assert resolve_resume(tmp_path, "latest") == checkpoint_dir(tmp_path, 3)
    with pytest.raises(ConfigError, match="checkpoints up to step-00000003; continue it with --resume"):
        resolve_resume(tmp_path, None)
