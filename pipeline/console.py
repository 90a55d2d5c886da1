"""What reaches the user's terminal: vugan's own progress, results and one-line errors, nothing else.

TensorFlow's C++ log lines and CUDA probes (written straight to file descriptor 2), Apache Beam's notices and
library deprecation warnings (Python ``logging`` and ``warnings``) go to the component's ``log.txt`` instead,
or are dropped below ERROR when there is no log file; ``--debug`` leaves everything on the terminal.
OS faults become one line naming the path, what failed and what to do (:func:`describe_os_error`).
"""
from __future__ import annotations

import contextlib
import errno
import io
import logging
import os
import sys
import warnings
from pathlib import Path

_ADVICE = {
    errno.EACCES: ("permission denied", "fix its permissions or choose another folder"),
    errno.EPERM: ("operation not permitted", "fix its permissions or choose another folder"),
    errno.EROFS: ("the file system is read-only", "choose a writable folder (--out / --runs-dir)"),
    errno.ENOSPC: ("no space left on the device", "free some space or write to another disk"),
    errno.EDQUOT: ("the disk quota is exceeded", "free some space or write to another disk"),
    errno.ENOTDIR: ("a part of the path is a file, not a folder", "give a folder path (remove or rename that file)"),
    errno.EISDIR: ("it is a folder, not a file", "give the path of a file"),
    errno.ENOENT: ("it does not exist", "check the path"),
    errno.EEXIST: ("it exists already", "remove it or choose another path"),
    errno.ENAMETOOLONG: ("the name is too long", "use a shorter path"),
    errno.EMFILE: ("too many open files", "raise the open-file limit (ulimit -n)"),
    errno.ENOMEM: ("out of memory", "use a machine with more memory, or lower the sizes in the config (e.g. max_voxels, batch_size)"),
}


# TensorFlow's file system layer reports a full disk as ResourceExhaustedError (or another OpError) whose message
# is "<path>; No space left on device" (or "... Disk quota exceeded"), not as an OSError: read the errno back from
# the text, so that a TensorFlow write and a Python write give the same line.
_TF_OS_MESSAGES = {"No space left on device": errno.ENOSPC, "Disk quota exceeded": errno.EDQUOT}


def find_os_error(exc: BaseException) -> OSError | None:
    """The OSError behind ``exc`` (itself, or in its cause/context chain, as Beam and TF wrap them); a TensorFlow
    error that carries a full-disk message counts as that OSError."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno is not None:
            return exc
        if (from_tf := os_error_from_tf_message(str(exc))) is not None:
            return from_tf
        exc = exc.__cause__ or exc.__context__
    return None


def os_error_from_tf_message(message: str) -> OSError | None:
    """``'/runs/x/ckpt-2_temp/part-00000-of-00001.data-00000-of-00001.tempstate1; No space left on device'`` ->
    OSError(ENOSPC, ..., that path). The path is the text before '; ' on the first line that names the fault
    (TF's own form); when there is none, the error names no file."""
    for text, number in _TF_OS_MESSAGES.items():
        for line in message.splitlines():
            if text not in line:
                continue
            head = line.split(text)[0].rstrip().rstrip(";:,").strip()
            path = head.rsplit(" ", 1)[-1] if head else None
            return OSError(number, os.strerror(number), path if path and "/" in path else None)
    return None


def describe_os_error(exc: OSError) -> str:
    """'cannot write /x/y: the file system is read-only; choose a writable folder (--out / --runs-dir)'."""
    what, todo = _ADVICE.get(exc.errno, (exc.strerror or "operating-system error", "check the path and retry"))
    path = exc.filename if exc.filename is not None else "a file"
    if exc.filename2:
        path = f"{path} -> {exc.filename2}"
    return f"{path}: {what} [{errno.errorcode.get(exc.errno, exc.errno)}]; {todo}"


@contextlib.contextmanager
def quiet_terminal(log_path: Path | None, debug: bool):
    """Route library noise to ``log_path`` (None: drop it below ERROR) while the body runs; yields the log stream
    (or None) so the caller can add a traceback there."""
    if debug:
        yield None
        return
    log = None
    created: list[Path] = []  # what this opened that was not there: removed again after a usage error
    if log_path is not None:
        try:
            created = [p for p in (log_path, *log_path.parents) if not p.exists()]
            log_path.parent.mkdir(parents=True, exist_ok=True)
            log = open(log_path, "a", buffering=1)
        except OSError:
            log = None  # an unwritable --out is reported by the command itself, as one line
    root = logging.getLogger()
    saved = (list(root.handlers), root.level, warnings.filters[:], sys.stderr)
    handler = logging.StreamHandler(log) if log is not None else logging.StreamHandler(sys.stderr)
    handler.setLevel(logging.DEBUG if log is not None else logging.ERROR)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO if log is not None else logging.ERROR)
    logging.captureWarnings(True)
    warnings.simplefilter("default")  # each library warning once, into the log
    saved_fd = _redirect_fd2(log)
    usage_exit = False
    try:
        yield log
    except SystemExit:
        # Only argparse exits inside (usage error, --help): the command never ran, so it leaves no folder behind.
        usage_exit = True
        raise
    finally:
        if saved_fd is not None:
            sys.stderr.flush()
            os.dup2(saved_fd, 2)
            os.close(saved_fd)
        root.handlers[:], root.level = saved[0], saved[1]
        warnings.filters[:] = saved[2]
        logging.captureWarnings(False)
        sys.stderr = saved[3]
        if log is not None:
            log.close()
        if usage_exit:
            _remove_created(created)


def _remove_created(created: list[Path]) -> None:
    """Remove the log file and the empty folders made for it, deepest first."""
    for path in created:
        try:
            path.unlink() if path.is_file() else path.rmdir()
        except OSError:
            return  # something else was written there meanwhile: leave it


def _redirect_fd2(log) -> int | None:
    """Point file descriptor 2 (where C++ libraries write) at the log; ``sys.stderr`` keeps the terminal."""
    if log is None:
        return None
    try:
        if sys.stderr.fileno() != 2:
            return None
    except (AttributeError, ValueError, io.UnsupportedOperation):
        return None  # stderr is captured (tests) or replaced: nothing at the descriptor level to move
    sys.stderr.flush()
    saved = os.dup(2)
    os.dup2(log.fileno(), 2)
    sys.stderr = io.TextIOWrapper(os.fdopen(os.dup(saved), "wb", buffering=0), write_through=True,
                                  line_buffering=True)
    return saved
