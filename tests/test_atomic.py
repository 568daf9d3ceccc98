"""`atomic.py`: a write that fails leaves the old content and no temporary; leftovers of dead writers are removed,
a live writer's are not; a folder has one lock holder at a time, named to the one refused."""
import os
import subprocess
import sys

import pytest

from latentqa.atomic import FolderLocked, folder_lock, publish_or_adopt, remove_dead_temps, temp_path, write_file


def test_a_failed_write_leaves_the_old_content_and_no_temporary(tmp_path):
    path = tmp_path / "file.txt"
    write_file(path, lambda tmp: tmp.write_text("old"))

    def half_then_fail(tmp):
        tmp.write_text("ne")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_file(path, half_then_fail)
    assert path.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"]
    write_file(path, lambda tmp: tmp.write_text("new"), durable=False)
    assert path.read_text() == "new"


def test_only_dead_writers_leftovers_are_removed(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    left = tmp_path / f".shard.safetensors.tmp-{dead_pid}-0a1b2c3d"
    left.write_text("half")
    (tmp_path / f".folder.trash-{dead_pid}-0a1b2c3d").mkdir()
    mine = temp_path(tmp_path / "other")
    mine.write_text("being written")
    (tmp_path / "shard.safetensors").write_text("whole")
    assert remove_dead_temps(tmp_path) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([mine.name, "shard.safetensors"])


def test_the_first_folder_published_wins_and_the_second_adopts_it(tmp_path):
    final = tmp_path / "entry"
    for text in ("first", "second"):
        tmp = temp_path(final)
        tmp.mkdir()
        (tmp / "data").write_text(text)
        published = publish_or_adopt(tmp, final)
        assert published == (text == "first") and not tmp.exists()
    assert (final / "data").read_text() == "first"


def test_a_folder_lock_refuses_a_second_holder_naming_the_first(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from latentqa.atomic import folder_lock\n"
        f"with folder_lock(Path({str(tmp_path)!r}), 'a build'):\n"
        "    print('held', flush=True); time.sleep(30)")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(FolderLocked, match=f"a build by process {holder.pid} is under way"):
            with folder_lock(tmp_path, "a build"):
                pass
    finally:
        holder.kill()
        holder.wait()
    with folder_lock(tmp_path, "a build"):  # the kernel released the dead holder's lock
        assert (tmp_path / ".lock").read_text() == f"process {os.getpid()}"
