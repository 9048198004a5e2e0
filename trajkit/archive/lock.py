"""One writer at a time: an advisory ``flock`` on ``<archive>/.trajkit.lock``.

The kernel releases the lock when the holding process dies (even by SIGKILL), so a crashed writer never
leaves a stale lock behind.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from trajkit.archive.format import LOCK_FILE
from trajkit.errors import LockedError


class WriterLock:
    """Exclusive, non-blocking lock on an archive directory; released by :meth:`release` or process exit."""

    def __init__(self, root: Path):
        self.path = root / LOCK_FILE
        self._fd: int | None = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self._fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(self._fd)
            self._fd = None
            raise LockedError(f"{root}: another writer (pid {holder}) has this archive open; wait for it to "
                              "close, or write to a different path") from None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, str(os.getpid()).encode(), 0)

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
