"""The flock that serialises every change of shared routes and of their state files.

One lock file (``config.lock_file``, by default /run/lock/announcer-routed.lock) is shared
by the CNI plugin and the Docker driver (root) and the announcer (its own user with
CAP_NET_ADMIN). It holds no data: it is made 0644 and opened read-only by whoever may not
write it, since flock works on any descriptor.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from announcer.cni.scheme import WiringError

LOCK_TIMEOUT_SECONDS = 60.0
ATTEMPTS = 5  # opens of a lock file made and removed under us


def _open_existing(path: str) -> int:
    """path opened read-write, else read-only (flock works on any descriptor): the
    announcer may not write a lock file root made. A file of ours that others may not read
    (made 0600 before) is made 0644: it holds no data."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except OSError as e:
        if e.errno not in (errno.EACCES, errno.EROFS):
            raise
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    st = os.fstat(fd)
    if st.st_uid == os.geteuid() and st.st_mode & 0o044 != 0o044:
        with contextlib.suppress(OSError):  # then the announcer's open says what to do
            os.fchmod(fd, (st.st_mode | 0o644) & 0o7777)
    return fd


def _open_lock(path: str) -> int:
    """A descriptor of the lock file, made 0644 (whatever the umask) if missing. An
    existing one is opened without O_CREAT: with fs.protected_regular, a sticky directory
    (/run/lock) refuses O_CREAT on another user's file, to root too."""
    for _ in range(ATTEMPTS):
        try:
            return _open_existing(path)
        except FileNotFoundError:
            pass
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        except FileExistsError:
            continue  # made meanwhile: open that one
        with contextlib.suppress(OSError):
            os.fchmod(fd, 0o644)
        return fd
    raise FileNotFoundError(errno.ENOENT, "made and removed again and again", path)


@contextmanager
def route_lock(path: str, timeout: float = LOCK_TIMEOUT_SECONDS) -> Iterator[None]:
    """An exclusive flock on path (made if missing) for as long as the block runs."""
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise WiringError(f"making the directory of lock {path}: {e}") from e
    try:
        fd = _open_lock(path)
    except PermissionError as e:
        uid = os.geteuid()
        raise WiringError(
            f"opening lock {path}: {e} (this process runs as uid {uid}): make it readable "
            f"(chmod 0644 {path})"
        ) from e
    except OSError as e:
        raise WiringError(f"opening lock {path}: {e}") from e
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise WiringError(f"lock {path} still held after {timeout:.0f} s") from None
                time.sleep(0.002)  # a holder keeps it for milliseconds; flock has no timeout
        yield
    finally:
        os.close(fd)  # releases the lock
