"""Writing files and folders so that a kill at any moment leaves the old version or the new one, whole.

Every writer puts its work under a temporary name beside the target (`.NAME.tmp-PID-RANDOM`: unique per writer, so
processes sharing a folder never collide, and a dead writer's leftovers can be told from a live one's), then
renames it into place; rename is atomic on POSIX.

- `write_file`: a file replaced in one `os.replace`.
- `publish_or_adopt`: a content-addressed folder (a cache entry). Whoever renames first wins; a writer that finds
  the name taken drops its copy and uses the one in place, which holds the same content.
- `replace_folder`: a folder that changes (a checkpoint saved again, the best reader). A folder cannot be renamed
  over a non-empty one, so replacing takes two renames; meanwhile the new version waits, complete, as `NAME.new`
  and the old as `NAME.old`. `recover(final)` finishes a replacement a kill interrupted; every reader of such a
  folder calls it first.
- `discard`: removes a folder by renaming it aside first, so a kill mid-removal never leaves a partial folder
  under a real name.
- `folder_lock`: one writer at a time for a folder (an index being built), held while the `with` block runs.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import re
import secrets
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

_TEMP = re.compile(r"^\.(?P<name>.+)\.(?:tmp|trash)-(?P<pid>\d+)-[0-9a-f]+$")


def temp_path(final: Path, kind: str = "tmp") -> Path:
    """A name beside `final` that no other writer uses."""
    return final.with_name(f".{final.name}.{kind}-{os.getpid()}-{secrets.token_hex(4)}")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def remove_dead_temps(folder: Path) -> int:
    """Remove the temporary files and folders in `folder` whose writer is no longer running; returns how many."""
    removed = 0
    if folder.is_dir():
        for path in folder.iterdir():
            match = _TEMP.match(path.name)
            if match and int(match["pid"]) != os.getpid() and not _alive(int(match["pid"])):
                _remove(path)
                removed += 1
    return removed


def write_file(path: Path, write: Callable[[Path], None], *, durable: bool = True) -> None:
    """`write(tmp)` writes the content to a temporary path, which then replaces `path`. `durable`: fsync the file
    before the rename and the folder after, so a power cut leaves the old content or the new, never an empty file
    (a cache whose entries are checked on read may skip it: a lost entry is recomputed)."""
    path = Path(path)
    tmp = temp_path(path)
    try:
        write(tmp)
        if durable:
            _fsync(tmp)
        os.replace(tmp, path)
        if durable:
            _fsync(path.parent)
    except BaseException:
        _remove(tmp)
        raise


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_text(path: Path, text: str) -> None:
    write_file(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def publish_or_adopt(tmp: Path, final: Path) -> bool:
    """Put the finished folder `tmp` at `final` unless another writer already did (then `tmp` is removed);
    returns whether this call published it."""
    try:
        os.rename(tmp, final)  # refused when `final` is a non-empty folder
        return True
    except OSError:
        if not final.exists():
            raise
        _remove(tmp)
        return False


def _new(final: Path) -> Path:
    return final.with_name(final.name + ".new")


def _old(final: Path) -> Path:
    return final.with_name(final.name + ".old")


def recover(final: Path) -> None:
    """Finish a `replace_folder` a kill interrupted: a complete `NAME.new` takes the place of `NAME`."""
    new, old = _new(final), _old(final)
    if new.exists():
        if final.exists():
            _remove(old)
            os.replace(final, old)
        os.replace(new, final)
    elif old.exists() and not final.exists():
        os.replace(old, final)
    _remove(old)


def replace_folder(tmp: Path, final: Path) -> None:
    """Put the finished folder `tmp` at `final`, replacing what is there; single writer per `final`."""
    recover(final)
    os.replace(tmp, _new(final))  # from here on the new version is the one `recover` keeps
    recover(final)


def discard(path: Path) -> None:
    """Remove a folder or file; a kill halfway leaves only a temporary name (`remove_dead_temps` clears it)."""
    if not path.exists():
        return
    aside = temp_path(path, "trash")
    os.replace(path, aside)
    _remove(aside)


class FolderLocked(RuntimeError):
    """Another process holds the folder's lock; the message names the folder and that process."""


@contextlib.contextmanager
def folder_lock(folder: Path, what: str) -> Iterator[None]:
    """Hold `folder/.lock` exclusively (an advisory `flock`: released by the kernel when the holder dies, so a
    killed writer never leaves the folder locked). Refuses at once, naming the holder, if another process has it."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise FolderLocked(f"{folder}: {what} by {holder} is under way; wait for it to end") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"process {os.getpid()}")
        handle.flush()
        try:
            yield
        finally:
            handle.truncate(0)
