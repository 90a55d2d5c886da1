"""One writer per output folder: an advisory lock (``flock``) on ``<folder>/.vugan.lock``.

The kernel drops the lock when its process ends, however it ends (SIGKILL included), so no stale lock is ever
left to clean up. The file names the holder (process id, host, component, start time) for the error a second
writer gets; it holds nothing else.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import json
import os
import socket
from pathlib import Path

LOCK_NAME = ".vugan.lock"


class FolderLockedError(RuntimeError):
    """Another process is writing the same output folder."""


@contextlib.contextmanager
def folder_lock(folder: str | Path, component: str):
    """Hold the folder's lock while the body runs; fail at once, naming the holder, if another process has it."""
    folder = Path(folder)
    fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _describe(os.pread(fd, 4096, 0))
        os.close(fd)
        raise FolderLockedError(f"{folder} is being written by another vugan process ({holder}); wait for it to "
                                f"finish, or write to another folder") from None
    try:
        info = {"pid": os.getpid(), "host": socket.gethostname(), "component": component,
                "since": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _describe(raw: bytes) -> str:
    try:
        info = json.loads(raw.decode())
        return f"{info['component']}, process {info['pid']} on {info['host']}, since {info['since']}"
    except (ValueError, KeyError, UnicodeDecodeError):
        return "holder unknown"
