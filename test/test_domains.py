"""ROS domain claims: two runs on one machine never get the same id, and an id held by a process
comes back when that process ends, however it ends."""

from __future__ import annotations

import subprocess
import sys

import pytest

from adaspring_ros.demo import domains
from adaspring_ros.demo.graph import ros_environment

FIRST, LAST = 225, 229  # claimed in a folder of the test's own: a run beside this one has its own

HOLDER = """
import sys, time
from adaspring_ros.demo import domains
claim = domains.claim_domain({first}, {last}, start={start}, folder={folder!r})
print(claim.domain_id, flush=True)
time.sleep(120)
"""


@pytest.fixture
def folder(tmp_path):
    return tmp_path / "claims"


def hold_in_child(start: int, folder) -> tuple[subprocess.Popen, int]:
    """A second process holding a claim, as a second run of the suite would; and its id."""
    code = HOLDER.format(first=FIRST, last=LAST, start=start, folder=str(folder))
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert line.strip().isdigit(), f"the holder printed {line!r}"
    return proc, int(line)


def free_ids(folder) -> list[int]:
    """The ids of FIRST..LAST this process can claim now (all claimed at once, then released)."""
    claims = []
    try:
        while True:
            claims.append(domains.claim_domain(FIRST, LAST, start=FIRST, folder=folder))
    except domains.DomainError:
        pass
    ids = sorted(c.domain_id for c in claims)
    for claim in claims:
        claim.release()
    return ids


def test_an_id_held_by_another_process_is_skipped_until_that_process_is_killed(folder):
    proc, held = hold_in_child(FIRST + 2, folder)
    try:
        assert held == FIRST + 2
        claim = domains.claim_domain(FIRST, LAST, start=held, folder=folder)
        assert claim.domain_id == held + 1  # the next free one, not the one held
        claim.release()
        assert held not in free_ids(folder)
    finally:
        proc.kill()  # no clean exit: the kernel still drops the lock
        proc.wait()
    assert free_ids(folder) == list(range(FIRST, LAST + 1))


def test_claims_in_one_process_are_distinct_wrap_around_and_run_out_with_a_clear_error(folder):
    claims = [domains.claim_domain(FIRST, LAST, start=LAST, folder=folder)
              for _ in range(LAST - FIRST + 1)]
    try:
        assert [c.domain_id for c in claims] == [LAST, *range(FIRST, LAST)]
        with pytest.raises(domains.DomainError, match=f"every ROS domain id {FIRST}..{LAST}"):
            domains.claim_domain(FIRST, LAST, folder=folder)
        claims[2].release()
        claims[2].release()  # twice is harmless
        with domains.claim_domain(FIRST, LAST, folder=folder) as again:
            assert again.domain_id == FIRST + 1
    finally:
        for claim in claims:
            claim.release()


def test_out_of_range_ids_are_refused():
    for first, last in ((0, 233), (-1, 5), (10, 9)):
        with pytest.raises(ValueError, match="0..232"):
            domains.claim_domain(first, last)


def test_the_demo_environment_holds_its_id_for_the_life_of_the_process(tmp_path):
    env = ros_environment(tmp_path)  # as the demo and the benchmarks get theirs
    domain = int(env["ROS_DOMAIN_ID"])
    low, high = domains.TESTS
    assert low <= domain <= high
    claim = domains.claim_domain(low, high, start=domain)
    try:
        assert claim.domain_id != domain
    finally:
        claim.release()
    assert ros_environment(tmp_path, 7)["ROS_DOMAIN_ID"] == "7"  # an id given is used as is
