"""Safe writes: atomic file replacement, and exclusive locks (`file_lock`: a run folder's, the zoo's).

Locks are `filelock`'s: fcntl on POSIX, msvcrt on Windows, so two runs on one folder are refused everywhere.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def atomic_write(path: str | Path, write) -> None:
    """Call write(tmp_path) on a temp file in the same folder, then rename it over `path`: a reader
    sees the old file or the new one, never half of one."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda p: Path(p).write_text(text, encoding="utf-8"))


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a new temp folder beside `path` to fill; when the block ends without error it takes `path`'s
    place (an older folder there is moved aside, then deleted), on error it is deleted. A reader never
    sees a half-written folder at `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.old-{uuid.uuid4().hex[:8]}")
            os.rename(path, old)
            shutil.rmtree(old, ignore_errors=True)
        os.rename(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


class FolderBusyError(RuntimeError):
    """Another process holds the folder's lock."""


_held: dict[str, list] = {}  # lock path -> [holders in this process, FileLock]: one process can re-enter its lock


def _holder(path: Path) -> str:
    try:
        return path.with_name(path.name + ".holder").read_text().strip() or "another process"
    except OSError:
        return "another process"


@contextmanager
def file_lock(path: str | Path, what: str = "run", wait: bool = False, hint: str = "wait for it to finish"):
    """Hold the lock file `path` exclusively for the block (`filelock`, cross-platform). `wait`: block until it is
    free; else a second process gets FolderBusyError naming the holder (its pid, kept in `path`.holder) and `hint`.

    Re-entrant within one process (the CLI takes a run's lock before harvesting, the trainer again inside; a
    notebook may make a new Trainer on a folder before the old one is collected): the lock is released when the
    last holder in this process leaves, whichever that is.
    """
    from filelock import FileLock, Timeout

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    key = str(path.resolve())
    if key in _held:
        _held[key][0] += 1
    else:
        lock = FileLock(str(path), thread_local=False)
        try:
            lock.acquire(timeout=-1 if wait else 0)
        except Timeout:
            raise FolderBusyError(f"{path.parent} is in use by another {what} ({_holder(path)}); {hint}") from None
        try:
            atomic_write_text(path.with_name(path.name + ".holder"), f"pid {os.getpid()}")
        except BaseException:
            lock.release()
            raise
        _held[key] = [1, lock]
    try:
        yield
    finally:
        entry = _held[key]
        entry[0] -= 1
        if entry[0] == 0:
            del _held[key]
            path.with_name(path.name + ".holder").unlink(missing_ok=True)
            entry[1].release()


def run_lock(folder: str | Path, what: str = "run"):
    """Hold `folder/.lock` exclusively for the block (`file_lock`); a second process gets FolderBusyError."""
    return file_lock(Path(folder) / ".lock", what, hint="wait for it to finish, or pass another --out folder")
