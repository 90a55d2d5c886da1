"""One writer per output folder: an advisory lock (``flock``) on ``<folder>/.vugan.lock``.

The kernel drops the lock when its process ends, however it ends (SIGKILL included), so a lock file a killed
process left behind is never mistaken for a live writer. The file names the holder (process id, host, component, start time) for the error a second
writer gets; it holds nothing else.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import json
import os
import socket
import time
from pathlib import Path

LOCK_NAME = ".vugan.lock"


class FolderLockedError(RuntimeError):
    """Another process is writing the same output folder."""


@contextlib.contextmanager
def folder_lock(folder: str | Path, component: str):
    """Hold the folder's lock while the body runs; fail at once, naming the holder, if another process has it.

    The lock file is removed on release, so a finished folder holds only its outputs. Removing it while
    locked is safe because a new holder checks, after locking, that the file it locked is still the one at
    the path (else it was removed meanwhile, and it retries on the new one).
    """
    path = Path(folder) / LOCK_NAME
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        if not _lock_now_or_soon(fd):
            holder = _describe(os.pread(fd, 4096, 0))
            os.close(fd)
            raise FolderLockedError(f"{folder} is being written by another vugan process ({holder}); wait for it "
                                    f"to finish, or write to another folder") from None
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the previous holder removed that file as we locked it: lock the current one
    try:
        info = {"pid": os.getpid(), "host": socket.gethostname(), "component": component,
                "since": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        yield
    finally:
        try:
            path.unlink()
        except OSError:
            pass  # the folder was removed or made read-only meanwhile: the lock still ends with the descriptor
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _lock_now_or_soon(fd: int) -> bool:
    """Take the exclusive lock. A few short retries: :func:`is_locked` holds it for microseconds while it looks,
    which must not read as another writer; a real writer holds it for the whole run."""
    for attempt in range(5):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            time.sleep(0.02 * (attempt + 1))
    return False


def is_locked(folder: str | Path) -> bool:
    """Whether a live process holds the folder's lock (``vugan runs``: running, or died without finishing).

    Looks by taking a shared lock for an instant and giving it back; the file is never created. A lock file a
    killed process left behind is not held: the kernel released it with the process.
    """
    try:
        fd = os.open(Path(folder) / LOCK_NAME, os.O_RDONLY)
    except OSError:
        return False  # no lock file: its holder finished (it removes the file) or never started
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def _describe(raw: bytes) -> str:
    try:
        info = json.loads(raw.decode())
        return f"{info['component']}, process {info['pid']} on {info['host']}, since {info['since']}"
    except (ValueError, KeyError, UnicodeDecodeError):
        return "holder unknown"
