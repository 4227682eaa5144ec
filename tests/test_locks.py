"""`saelab.files.file_lock` (filelock: the same on POSIX and Windows): another process is refused with its pid, or
waited for; one process re-enters its own lock."""

import subprocess
import sys
import time

import pytest

from saelab.files import FolderBusyError, file_lock, run_lock

HOLD = """
import sys, time
from saelab.files import file_lock
with file_lock(sys.argv[1], "zoo training"):
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def test_another_process_is_refused_or_waited_for_and_one_process_reenters(tmp_path):
    path = tmp_path / "zoo.lock"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(path), "3"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(FolderBusyError, match=f"in use by another zoo training \\(pid {holder.pid}\\)"):
            with file_lock(path, "zoo training"):
                pass
        t0 = time.monotonic()
        with file_lock(path, "zoo training", wait=True):  # blocks until the holder exits
            assert time.monotonic() - t0 > 1.0  # it waited for the holder to let go
            with file_lock(path, "zoo training"):  # re-entered, not refused
                pass
            assert path.with_name("zoo.lock.holder").read_text() == f"pid {__import__('os').getpid()}"
        assert not path.with_name("zoo.lock.holder").exists()
    finally:
        holder.kill()
        holder.wait()
    with run_lock(tmp_path / "run"), run_lock(tmp_path / "run"):
        assert (tmp_path / "run" / ".lock.holder").exists()
