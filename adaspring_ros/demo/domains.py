"""ROS domain ids claimed on this machine, so that two runs never share a graph.

The demo, the tests and the benchmarks run their nodes on loopback in a domain of their own. Two
runs started side by side on one machine (two CI jobs, a demo beside the test suite) used to draw
their domains at random and could meet in one: a test's parameter call then reached the other
run's evolution node, and that node's configurations arrived on the test's /adaspring/config
(seen in CI: "stale: no context yet" from a node the test never started).

A claim is an exclusive ``flock`` on a file named after the id, in one directory of the
machine's temporary folder that every user may write. The kernel drops the lock when the
process ends, however it ends, so a killed run never leaves an id taken; nothing is written and
nothing needs cleaning up. Nodes started by the claiming process inherit the id through
ROS_DOMAIN_ID and die with it (child_process.py).
"""

from __future__ import annotations

import errno
import fcntl
import os
import random
import tempfile
from pathlib import Path

__all__ = ["DomainClaim", "DomainError", "claim_domain", "claims_dir", "TESTS", "BENCHMARKS"]

TESTS = (1, 101)  # the demo and the tests: ids every ROS 2 install accepts
BENCHMARKS = (102, 232)  # benchmarks: valid, with fewer participants per domain


class DomainError(RuntimeError):
    """No id of the range is free on this machine."""


def claims_dir() -> Path:
    """The folder of the lock files: the same for every user and process of this machine."""
    return Path(tempfile.gettempdir()) / "adaspring_ros-domains"


class DomainClaim:
    """A ROS domain id held by this process until :meth:`release` or its exit."""

    def __init__(self, domain_id: int, fd: int) -> None:
        self.domain_id, self._fd = domain_id, fd

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Give the id back (closing the file drops the lock); safe to call twice."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> DomainClaim:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"DomainClaim({self.domain_id}, held={self.held})"


def _lock_file(folder: Path, domain_id: int) -> int | None:
    """An open descriptor of the id's lock file, created readable by all; None when this user
    may neither create nor read it."""
    path = folder / f"{domain_id}.lock"
    try:
        return os.open(path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o444)
    except PermissionError:
        return None


def claim_domain(first: int = TESTS[0], last: int = TESTS[1], start: int | None = None,
                 folder: Path | None = None) -> DomainClaim:
    """Claim the first free id of ``first..last``, trying them in turn from ``start`` (a random
    one when None) and wrapping around; ``folder`` replaces :func:`claims_dir` (tests). Raises
    DomainError when every one is held by another process, or the folder cannot be used."""
    if not 0 <= first <= last <= 232:
        raise ValueError(f"ROS domain ids are 0..232, not {first}..{last}")
    folder = Path(folder) if folder is not None else claims_dir()
    try:
        folder.mkdir(exist_ok=True)
        if folder.stat().st_uid == os.geteuid():
            folder.chmod(0o1777)  # every user's runs claim here; each keeps its own files
    except OSError as exc:
        raise DomainError(f"cannot use {folder} to claim a ROS domain id: {exc}") from exc
    count = last - first + 1
    if start is None:
        start = random.SystemRandom().randint(first, last)
    offset = (start - first) % count
    for step in range(count):
        domain_id = first + (offset + step) % count
        fd = _lock_file(folder, domain_id)
        if fd is None:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                continue  # another process runs a graph there
            raise DomainError(f"cannot lock {folder / f'{domain_id}.lock'}: {exc}") from exc
        return DomainClaim(domain_id, fd)
    raise DomainError(f"every ROS domain id {first}..{last} is held by another run on this "
                      f"machine (lock files in {folder}): stop one")
