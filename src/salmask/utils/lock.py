"""One run per work dir: an advisory lock on ``{work_dir}/.salmask.lock`` held for the whole run.

The lock is an ``flock`` on the file, which the kernel drops when its holder dies, however it dies; the
file records the holder's PID and host so a refused run can name them. A run finding the file left by a
process that no longer holds the lock (killed) takes it over and logs so. Under ``torchrun`` only rank 0
takes the lock and the other ranks learn the outcome from it, so the ranks of one job share it. Nesting
(``salmask study`` holding its work dir while its runs lock it again) is counted, not re-locked.
"""
from __future__ import annotations

import contextlib
import errno
import os
import socket
from pathlib import Path
from typing import Iterator

from salmask.errors import ConfigError
from salmask.utils import dist

LOCK_NAME = ".salmask.lock"
_held: dict[Path, list] = {}  # work dir -> [open file, depth]


def _holder(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _acquire(work_dir: Path):
    """Open and lock the lock file; raise ConfigError naming the holder when another process has it."""
    from salmask.utils.log import logger

    work_dir.mkdir(parents=True, exist_ok=True)
    path = work_dir / LOCK_NAME
    f = open(path, "a+")
    try:
        import fcntl

        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except ImportError:  # no fcntl (Windows): the PID in the file decides
        previous = _holder(path).split()
        if previous and previous[0].isdigit() and int(previous[0]) != os.getpid() and _alive(int(previous[0])):
            f.close()
            raise ConfigError(f"{work_dir} is in use by another salmask run (PID {previous[0]}); wait for it, "
                              f"stop it, or choose another work_dir") from None
    except OSError as e:
        f.close()
        if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            raise ConfigError(f"{path}: cannot lock the work dir ({e.strerror})") from None
        holder = _holder(path) or "unknown PID"
        raise ConfigError(f"{work_dir} is in use by another salmask run (PID {holder}); wait for it, stop it "
                          f"(kill {holder.split()[0]}), or choose another work_dir") from None
    previous = _holder(path)
    if previous and previous.split()[0] != str(os.getpid()):
        logger.info("work dir lock: taking over %s left by PID %s, which no longer runs", path, previous)
    f.seek(0)
    f.truncate()
    f.write(f"{os.getpid()} {socket.gethostname()}\n")
    f.flush()
    return f


@contextlib.contextmanager
def work_dir_lock(work_dir: Path) -> Iterator[None]:
    """Hold the work dir's lock for the duration of the block (rank 0 takes it for the whole job)."""
    work_dir = Path(work_dir).resolve()
    if work_dir in _held:
        _held[work_dir][1] += 1
        try:
            yield
        finally:
            _held[work_dir][1] -= 1
        return
    f, error = None, None
    if dist.is_main():
        try:
            f = _acquire(work_dir)
        except ConfigError as e:
            error = e
    if not dist.broadcast_flag(error is None):
        raise error or ConfigError(f"{work_dir} is in use by another salmask run (rank 0 could not lock it)")
    _held[work_dir] = [f, 1]
    try:
        yield
    finally:
        _held.pop(work_dir, None)
        if f is not None:  # emptied: a PID left in the file means its run was killed
            f.seek(0)
            f.truncate()
            f.close()
