"""Safe writes: atomic file replacement, an exclusive lock on a run folder (`run_lock`: a second run is refused) and
a lock that waits its turn (`waiting_lock`: a second process waits for the first, e.g. to train a zoo SAE once).

`fcntl` locks are POSIX-only; on Windows both warn and do not lock.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
import warnings
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


_held: dict[str, list] = {}  # lock path -> [holders in this process, open file]: one process can re-enter its lock


@contextmanager
def run_lock(folder: str | Path, what: str = "run"):
    """Hold `folder/.lock` exclusively for the block; a second process gets FolderBusyError naming the holder.

    Re-entrant within one process (the CLI takes it before harvesting, the trainer again inside; a
    notebook may make a new Trainer on a folder before the old one is collected): the file lock is
    released when the last holder in this process leaves, whichever that is.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / ".lock"
    key = str(path.resolve())
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks here
        warnings.warn("saelab: file locking needs fcntl (POSIX); two runs on one folder are not prevented",
                      stacklevel=2)
        yield
        return
    if key in _held:
        _held[key][0] += 1
    else:
        f = open(path, "a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            f.close()
            raise FolderBusyError(f"{folder} is in use by another {what} ({holder}); wait for it to finish, "
                                  "or pass another --out folder") from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()}")
        f.flush()
        _held[key] = [1, f]
    try:
        yield
    finally:
        entry = _held[key]
        entry[0] -= 1
        if entry[0] == 0:
            del _held[key]
            f = entry[1]
            f.seek(0)
            f.truncate()
            fcntl.flock(f, fcntl.LOCK_UN)
            f.close()


@contextmanager
def waiting_lock(path: str | Path):
    """Hold the lock file `path` exclusively for the block, waiting while another process holds it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks here
        warnings.warn("saelab: file locking needs fcntl (POSIX); two processes may do the same work", stacklevel=2)
        yield
        return
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
