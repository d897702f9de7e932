"""Test environment: a private ROS domain per test module on loopback, logs under a temp dir."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import settings

from adaspring_ros.demo import domains

# Property tests draw the same examples on every run: a red CI must be reproducible, never a new
# random draw (explore with HYPOTHESIS_PROFILE=explore).
settings.register_profile("ci", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# Set before any test imports rclpy, and inherited by every child node process. Each module then
# claims a domain of its own (see private_ros_domain); ROS_DOMAIN_ID, if set, is where the search
# for a free one starts. Tests and the demo use domains 1..101, benchmarks 102..232.
os.environ.setdefault("ROS_DOMAIN_ID", str(random.SystemRandom().randint(*domains.TESTS)))
_NEXT_DOMAIN = int(os.environ["ROS_DOMAIN_ID"])
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
_OWN_LOG_DIR = (None if "ROS_LOG_DIR" in os.environ
                else tempfile.mkdtemp(prefix="adaspring-roslog-"))
if _OWN_LOG_DIR:
    os.environ["ROS_LOG_DIR"] = _OWN_LOG_DIR
os.environ.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
# Camera-sized frames (640x480 rgb8 is 900 KB) exceed Fast DDS's default 512 KB shared-memory
# segment and are mostly lost best-effort on a busy machine; the graph runs with the shipped
# profile, as README and the demo advise for robots.
os.environ.setdefault(
    "FASTDDS_DEFAULT_PROFILES_FILE",
    str(Path(__file__).resolve().parent.parent / "config" / "fastdds_large_images.xml"),
)


def _clean_shared_memory() -> None:
    """Remove the Fast DDS shared-memory segments whose process is gone (Fast DDS's own
    ``fastdds shm clean``: a live process's segments stay). The fault tests SIGKILL nodes on
    purpose, and a killed participant leaves its segment behind: with the 32 MB segments of
    fastdds_large_images.xml, a few hundred MB of /dev/shm (memory) per run of the suite."""
    tool = Path(sys.prefix) / "tools" / "fastdds" / "fastdds.py"
    if tool.is_file():
        subprocess.run([sys.executable, str(tool), "shm", "clean"], capture_output=True,
                       timeout=60, check=False)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Shared memory of killed nodes is removed; the nodes' logs go with a green run; a red one
    keeps them and says where."""
    _clean_shared_memory()
    if not _OWN_LOG_DIR:
        return
    if exitstatus == 0:
        shutil.rmtree(_OWN_LOG_DIR, ignore_errors=True)
    else:
        print(f"\nROS logs of this run: {_OWN_LOG_DIR}")


@pytest.fixture(scope="module", autouse=True)
def private_ros_domain():
    """A ROS domain for this module alone: the next id after the previous module's that no
    other process on this machine holds (domains.py), so a node an earlier module left shutting
    down never publishes into this module's topics, and a second run of the suite beside this
    one (another CI job) never calls this module's services."""
    global _NEXT_DOMAIN
    with domains.claim_domain(*domains.TESTS, start=_NEXT_DOMAIN) as claim:
        _NEXT_DOMAIN = claim.domain_id + 1
        os.environ["ROS_DOMAIN_ID"] = str(claim.domain_id)
        yield claim.domain_id


@pytest.fixture
def rclpy_node(request):
    """A node of the test process in the default rclpy context; shut down after the test."""
    rclpy = pytest.importorskip("rclpy")
    rclpy.init()
    name = "".join(c if c.isalnum() else "_" for c in request.node.name[:40])
    node = rclpy.create_node(f"test_{name}")
    yield node
    node.destroy_node()
    rclpy.try_shutdown()
