"""One process per data directory: an exclusive lock held for the daemon's life.

Two daemons on one ``server.data_dir`` would write the same index (the
embedded one even deletes its file at start), so the second one must refuse
before touching anything. ``fcntl.flock`` on a lock file in the directory
does it: the kernel releases the lock when the process ends however it ends
(kill -9 included), so a crash never leaves a stale lock behind. The file
holds the owner's pid, for the error message only.
"""

from __future__ import annotations

import errno
import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["LOCK_FILENAME", "DataDirLocked", "hold_data_dir"]

LOCK_FILENAME = "perpstream.lock"


class DataDirLocked(RuntimeError):
    """Another process holds the data directory."""


@contextmanager
def hold_data_dir(directory: str | Path) -> Iterator[Path]:
    """Hold ``directory`` (created if missing) for the ``with`` block, or raise DataDirLocked."""
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    lock_path = path / LOCK_FILENAME
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            owner = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise DataDirLocked(
                f"data directory {path.resolve()} is in use by another perpstream process "
                f"(pid {owner}, lock {lock_path}); stop it or give this one another server.data_dir"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield path
    finally:
        os.close(fd)  # closing the descriptor releases the lock
