"""Atomic file writes (a reader or a resumed run sees the old file or the new one, never half)
and directory locks (one process per run directory).

Ground floor of the library: imports nothing from lvat_tf.
"""
import fcntl
import json
import os
import socket


def write_text_atomic(path: str, text: str) -> None:
    """Writes ``text`` to ``path`` through a temporary file in the same directory."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def write_json_atomic(path: str, obj, indent: int = 2, sort_keys: bool = True) -> None:
    """Writes ``obj`` as JSON to ``path`` atomically."""
    write_text_atomic(path, json.dumps(obj, indent=indent, sort_keys=sort_keys))


class DirectoryBusy(RuntimeError):
    """Another live process holds the directory's lock (one-line message)."""


class DirectoryLock:
    """An exclusive lock on a directory, held by this process until released.

    Two processes writing one run directory interleave checkpoints, logs and
    results.json without either noticing (it happened: two seeds started into one
    directory). ``fcntl.flock`` on ``<directory>/.lock`` makes the second one stop
    at once, or wait (``wait=True``, for a shared model one process trains and the
    others then reuse). The kernel drops the lock when its holder dies, so a
    crashed run never leaves a stale lock behind; the file only tells who held it.

    Args:
      directory: created when missing.
      flag: the flag named in the error (e.g. ``--log_dir``).
      wait: block until the holder releases it instead of raising.
      on_wait: called with the holder's description before blocking.

    Raises (on ``acquire``):
      DirectoryBusy: ``wait`` is False and another process holds the lock.
    """

    FILENAME = ".lock"

    def __init__(self, directory: str, flag: str = "--log_dir", wait: bool = False,
                 on_wait=None):
        self.directory = directory
        self.path = os.path.join(directory, self.FILENAME)
        self.flag = flag
        self.wait = wait
        self.on_wait = on_wait
        self._fd = None

    def holder(self) -> str:
        """What the lock file says of its holder (``pid N on HOST``), or ``unknown``."""
        try:
            with open(self.path) as f:
                return f.read().strip() or "unknown"
        except OSError:
            return "unknown"

    def acquire(self) -> "DirectoryLock":
        os.makedirs(self.directory, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not self.wait:
                os.close(fd)
                raise DirectoryBusy(f"{self.flag}: {self.directory} is in use by another "
                                    f"process ({self.holder()}); wait for it to finish or use "
                                    f"another directory") from None
            if self.on_wait is not None:
                self.on_wait(self.holder())
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
        return False
