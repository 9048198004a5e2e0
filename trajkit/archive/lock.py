"""One writer at a time: an advisory ``flock`` on ``<archive>/.trajkit.lock``.

The kernel releases the lock when the holding process dies (even by SIGKILL), so a crashed writer never
leaves a stale lock behind. The file's content says whether the last writer closed: a writer writes
``"<pid> open"`` when it takes the lock and empties the file when it closes (:meth:`WriterLock.release`
with ``closed=True``). A file still saying ``open`` while nobody holds the lock is a writer that died —
the run was interrupted (:func:`probe`, used by :func:`trajkit.archive.info.run_state`).
"""

from __future__ import annotations

import fcntl
import os
import time
from dataclasses import dataclass
from pathlib import Path

from trajkit.archive.format import LOCK_FILE
from trajkit.errors import LockedError

#: word after the pid in the lock file while a writer has the archive open
OPEN_MARK = "open"

#: how long a writer retries a lock that a reader's :func:`probe` holds for a moment (seconds)
ACQUIRE_RETRY_S = 0.25


@dataclass(frozen=True)
class LockState:
    """What ``.trajkit.lock`` says: ``held`` (a live process holds the lock), ``pid`` (the last writer's,
    or None), ``open`` (the last writer never closed: ``True``, closed: ``False``, unknown for files
    written before trajkit marked it, or with no lock file: ``None``)."""

    held: bool
    pid: int | None
    open: bool | None


class WriterLock:
    """Exclusive, non-blocking lock on an archive directory; released by :meth:`release` or process exit."""

    def __init__(self, root: Path):
        self.path = root / LOCK_FILE
        self._fd: int | None = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + ACQUIRE_RETRY_S
        while True:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() < deadline:   # a reader's probe holds it for microseconds
                    time.sleep(0.01)
                    continue
                text = os.pread(self._fd, 64, 0).decode(errors="replace").split()
                os.close(self._fd)
                self._fd = None
                holder = text[0] if text else "unknown"
                raise LockedError(f"{root}: another writer (pid {holder}) has this archive open; wait for it "
                                  "to close, or write to a different path") from None
        self._previous = os.pread(self._fd, 64, 0)
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"{os.getpid()} {OPEN_MARK}\n".encode(), 0)

    def release(self, closed: bool | None = True) -> None:
        """Release the lock. ``closed=True``: the writer finished its archive (the file is emptied);
        ``False``: it stopped without finishing (the file keeps saying ``open``); ``None``: it changed
        nothing (the file gets back what it said before this writer took the lock)."""
        if self._fd is not None:
            if closed is not False:
                os.ftruncate(self._fd, 0)
            if closed is None and self._previous:
                os.pwrite(self._fd, self._previous, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def probe(root: Path) -> LockState:
    """Whether a live writer holds ``root``'s lock, and whether the last one closed (never blocks a writer
    for more than the few microseconds of a shared ``flock`` attempt)."""
    path = Path(root) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return LockState(held=False, pid=None, open=None)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            held = False
            fcntl.flock(fd, fcntl.LOCK_UN)
        except BlockingIOError:
            held = True
        except OSError:       # a file system without flock: nobody can hold it
            held = False
        words = os.pread(fd, 64, 0).decode(errors="replace").split()
    finally:
        os.close(fd)
    pid = int(words[0]) if words and words[0].isdigit() else None
    if not words:
        return LockState(held, None, False)
    return LockState(held, pid, True if OPEN_MARK in words[1:] else None)
