"""What a user types on a robot, run for real: ``ros2 launch`` of both launch files (plain,
managed, with a bad parameter file), ``ros2 topic echo``, ``ros2 param get/set/load/dump``,
``ros2 lifecycle get/set``, ``ros2 node list``, and Ctrl-C / SIGTERM to ``ros2 launch``.

``ros2 launch`` starts what ``make setup`` installed with colcon (lib/adaspring_ros executables,
share/adaspring_ros launch files and config, the package in site-packages), not this checkout:
the tests fail first, saying so, when that copy differs from the checkout. The venv's ``ros2`` is
used, else one on PATH (a robot's ROS install with its workspace sourced); without either, or
when that ``ros2`` cannot find the package, the tests skip and say why. The ``ros2`` daemon is
started before the first launch and stopped at the end: a daemon that a verb starts later knows
nothing of the graph yet ("Node not found").

The launches of one configuration are shared by the tests that read them, in file order (the
robot launch, then the demo). Graph state is awaited here with rclpy, and a verb whose daemon
may lag behind is re-run until it answers, always against a deadline.
"""

from __future__ import annotations

import filecmp
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml
from ros_harness import spin_until

from adaspring_ros import msg_convert
from adaspring_ros.core import paths
from adaspring_ros.core.model.config import DEFAULT_SPACE, CompressionConfig
from adaspring_ros.core.model.profile_table import ProfileTable
from adaspring_ros.demo.child_process import dies_with_parent

pytestmark = pytest.mark.ros

PACKAGE = "adaspring_ros"
REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
TEST_CAMERA = "/test_camera/image_raw"
FULL = CompressionConfig.full(ProfileTable.load(paths.default_profile_table()).space).id
NODES = ("perception_node", "context_node", "evolution_node")
DEMO_NODES = (*NODES, "camera_replay_node")
BUILT_IN = {"use_sim_time", "start_type_description_service"}  # declared by rclpy itself
# The robot launch's params_file: the shipped YAML with these values. λ1 1 and λ2 0 are what
# adaptive λ gives without a battery, so `adaptive_lambdas false` alone changes no decision.
OVERRIDES = {"evolution_node": {"min_swap_interval_s": 1.0, "lambda1": 1.0, "lambda2": 0.0}}
STOP_S = 10.0  # every node must be gone this long after the signal


def find_ros2() -> str | None:
    """The venv's ``ros2``, else one on PATH."""
    venv = VENV_BIN / "ros2"
    return str(venv) if venv.is_file() else shutil.which("ros2")


def installed_prefix(env: dict[str, str]) -> Path | None:
    """The install prefix where ``ros2`` finds this package (the ament index), or None."""
    for prefix in filter(None, env.get("AMENT_PREFIX_PATH", "").split(os.pathsep)):
        if (Path(prefix) / "share/ament_index/resource_index/packages" / PACKAGE).exists():
            return Path(prefix)
    return None


def stale_files(prefix: Path) -> list[str]:
    """Files of this checkout that the installed copy under ``prefix`` lacks or holds
    otherwise."""
    share, lib = prefix / "share" / PACKAGE, prefix / "lib" / PACKAGE
    pairs = [(p, share / p.relative_to(REPO)) for d in ("launch", "config")
             for p in (REPO / d).rglob("*") if p.is_file()]
    pairs += [(p, lib / p.name) for p in (REPO / "scripts").iterdir() if p.is_file()]
    site = sorted(prefix.glob(f"lib/python3*/site-packages/{PACKAGE}")) or sorted(
        prefix.glob(f"local/lib/python3*/dist-packages/{PACKAGE}"))
    if site:
        pairs += [(p, site[0] / p.relative_to(REPO / PACKAGE))
                  for p in (REPO / PACKAGE).rglob("*.py")]
    return [str(src.relative_to(REPO)) for src, dst in pairs
            if not dst.is_file() or not filecmp.cmp(src, dst, shallow=False)]


def gone(pid: int) -> bool:
    """Whether process ``pid`` has exited (a zombie nobody reaped yet counts as exited)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    except (OSError, IndexError):  # no /proc: ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False
    return state in ("Z", "X")


class Launch:
    """One ``ros2 launch`` process; its output (the nodes' too) in ``log_path``, its ROS logs in
    ``log_dir``."""

    STARTED = re.compile(r"\[INFO\] \[([\w]+)-\d+\]: process started with pid \[(\d+)\]")

    def __init__(self, ros2: Ros2, name: str, args: list[str]) -> None:
        self.name = name
        self.log_dir = ros2.log_dir / name
        self.log_dir.mkdir(parents=True)
        self.log_path = self.log_dir / "launch.out"
        command = [ros2.exe, "launch", PACKAGE, *args]
        if Path(ros2.exe).parent == VENV_BIN:  # the venv's: it dies with this test run
            command = dies_with_parent(command, signal.SIGTERM)
        with open(self.log_path, "wb") as out:
            self.proc = subprocess.Popen(
                command, env={**ros2.env, "ROS_LOG_DIR": str(self.log_dir)}, stdout=out,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def node_pids(self) -> dict[str, int]:
        """Node name -> pid, for every process this launch started so far."""
        return {name: int(pid) for name, pid in self.STARTED.findall(self.output())}

    def logs(self) -> str:
        """Everything this launch and its nodes wrote: its output and the ROS log files."""
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.log_dir.rglob("*"))
                         if p.is_file())

    def wait_for(self, node, predicate, timeout: float, what: str) -> None:
        """Spin ``node`` until ``predicate()``, failing early (with the output) if the launch
        ends."""
        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"ros2 launch ended ({self.proc.returncode})")
            return predicate()
        try:
            spin_until(node, ready, timeout, what)
        except AssertionError as exc:
            raise AssertionError(f"{exc} (waiting for {what})\n--- ros2 launch ({self.name}) "
                                 f"---\n{self.output()[-4000:]}") from None

    def stop(self, signum: int) -> tuple[int | None, list[str]]:
        """Send ``signum``; the launch's exit status and the nodes still running STOP_S later."""
        pids = self.node_pids()
        self.proc.send_signal(signum)
        deadline = time.monotonic() + STOP_S
        while time.monotonic() < deadline and not (
                self.proc.poll() is not None and all(gone(p) for p in pids.values())):
            time.sleep(0.05)
        return self.proc.poll(), [name for name, pid in pids.items() if not gone(pid)]

    def kill(self) -> None:
        """Teardown: Ctrl-C to a launch still running, then SIGKILL to whatever of it remains
        (a node that outlived its launch included)."""
        if self.proc.poll() is None:
            self.stop(signal.SIGINT)
        for pid in self.node_pids().values():
            if not gone(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)


class Ros2:
    """The ``ros2`` command on this module's private ROS domain."""

    def __init__(self, exe: str, log_dir: Path) -> None:
        self.exe, self.log_dir = exe, log_dir
        self.launches: list[Launch] = []
        env = dict(os.environ)
        if Path(exe).parent == VENV_BIN:  # the package lies in the venv, where colcon put it
            env["AMENT_PREFIX_PATH"] = str(VENV_BIN.parent)
            env["PATH"] = os.pathsep.join([str(VENV_BIN), env.get("PATH", "")])
        env.update(ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST", ROS_LOG_DIR=str(log_dir),
                   PYTHONUNBUFFERED="1")
        self.env = env

    def run(self, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess:
        return subprocess.run([self.exe, *args], env=self.env, capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)

    def __call__(self, *args: str, timeout: float = 30.0) -> str:
        """``ros2 <args>``'s output; fails with it unless the command succeeded."""
        result = self.run(*args, timeout=timeout)
        assert result.returncode == 0, (f"ros2 {' '.join(args)} exited {result.returncode}:\n"
                                        f"{result.stdout}{result.stderr}")
        return result.stdout

    def until(self, args: list[str], predicate, timeout: float, what: str) -> str:
        """Run ``ros2 <args>`` until its output satisfies ``predicate`` (the daemon may not
        know the graph yet); that output."""
        deadline = time.monotonic() + timeout
        while True:
            result = self.run(*args)
            if result.returncode == 0 and predicate(result.stdout):
                return result.stdout
            if time.monotonic() > deadline:
                raise AssertionError(f"ros2 {' '.join(args)} never showed {what} in "
                                     f"{timeout:.0f} s; last:\n{result.stdout}{result.stderr}")

    def launch(self, name: str, *args: str) -> Launch:
        """``ros2 launch adaspring_ros <args>``; one at a time: a launch that an earlier test
        left running (a failed one) is stopped first, so two graphs never share the domain."""
        for earlier in self.launches:
            earlier.kill()
        self.launches.append(Launch(self, name, list(args)))
        return self.launches[-1]


@pytest.fixture(scope="module")
def ros2(tmp_path_factory) -> Ros2:
    exe = find_ros2()
    if exe is None:
        pytest.skip("no ros2 command: neither the venv's (make setup installs it where "
                    "../shared/ros2_cli exists) nor a ROS install's on PATH")
    cli = Ros2(exe, tmp_path_factory.mktemp("ros2_cli"))
    prefix = installed_prefix(cli.env)
    if prefix is None:
        pytest.skip(f"{exe} finds no {PACKAGE} on AMENT_PREFIX_PATH (colcon build it and source "
                    f"install/setup.bash)")
    stale = stale_files(prefix)
    if stale:
        pytest.fail(f"the installed {PACKAGE} under {prefix} is not this checkout "
                    f"({len(stale)} files differ, e.g. {stale[0]}): rebuild it (make setup)")
    # A launch started from a shell that ignores Ctrl-C would inherit that and ignore it too.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    cli("daemon", "start")
    yield cli
    cli.run("daemon", "stop")


def wait_for_nodes(ros2: Ros2, names) -> set[str]:
    """Until ``ros2 node list`` lists every one of ``names``; the nodes it lists then."""
    wanted = {f"/{n}" for n in names}
    out = ros2.until(["node", "list"], lambda o: wanted <= set(o.split()), 90,
                     f"the nodes {sorted(wanted)}")
    return set(out.split())


def assert_clean_stop(launch: Launch, signum: int, allowed: tuple[int, ...] = (0,)) -> None:
    """Every node exits within STOP_S of ``signum`` to ``ros2 launch``, which exits with one of
    ``allowed``, and nothing printed or logged a traceback."""
    status, running = launch.stop(signum)
    assert not running, f"still running {STOP_S:g} s after {signum!r}: {running}\n" \
        f"{launch.output()[-3000:]}"
    assert status in allowed, f"ros2 launch exited {status}:\n{launch.output()[-3000:]}"
    assert "Traceback" not in launch.logs(), launch.logs()[-6000:]


class FakeCamera:
    """64x48 rgb8 frames on TEST_CAMERA at 20 Hz, and the InferenceResults that come back."""

    def __init__(self, node) -> None:
        from adaspring_ros.msg import CompressionConfig, InferenceResult
        from sensor_msgs.msg import Image

        from adaspring_ros.nodes.qos import CONFIG_QOS, RESULT_QOS, SENSOR_QOS

        self.node = node
        self.results: list = []
        self.configs: list = []
        pixels = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
        self.image = Image(height=48, width=64, encoding="rgb8", step=64 * 3,
                           data=pixels.tobytes())
        self.image.header.frame_id = "test_camera"
        self.publisher = node.create_publisher(Image, TEST_CAMERA, SENSOR_QOS)
        node.create_subscription(InferenceResult, "/adaspring/result", self.results.append,
                                 RESULT_QOS)
        node.create_subscription(CompressionConfig, "/adaspring/config", self.configs.append,
                                 CONFIG_QOS)
        node.create_timer(0.05, self.publish)

    def publish(self) -> None:
        self.image.header.stamp = self.node.get_clock().now().to_msg()
        self.publisher.publish(self.image)


# -- ros2 launch adaspring_ros adaspring.launch.py image_topic:=... params_file:=... ------------

@pytest.fixture(scope="module")
def robot(ros2, tmp_path_factory):
    shipped = yaml.safe_load((REPO / "config" / "adaspring.yaml").read_text())
    for node, values in OVERRIDES.items():
        shipped[node]["ros__parameters"].update(values)
    params = tmp_path_factory.mktemp("robot") / "my_params.yaml"
    params.write_text(yaml.safe_dump(shipped))
    launch = ros2.launch("robot", "adaspring.launch.py", f"image_topic:={TEST_CAMERA}",
                         f"params_file:={params}")
    yield launch
    launch.kill()


def test_launch_classifies_the_image_topic_it_is_given(robot, rclpy_node):
    camera = FakeCamera(rclpy_node)
    robot.wait_for(rclpy_node, lambda: len(camera.results) >= 5, 90, "5 InferenceResults")
    assert {r.header.frame_id for r in camera.results} == {"test_camera"}
    assert rclpy_node.count_subscribers("/camera/image_raw") == 0  # remapped, not added


def test_node_info_lists_the_camera_subscription_under_the_perception_node(robot, ros2):
    # Taken on the node's own frame thread, outside the executor, it is still the node's.
    out = ros2.until(["node", "info", "/perception_node"], lambda o: TEST_CAMERA in o, 60,
                     "the camera subscription in ros2 node info")
    subscribers = out.split("Subscribers:")[1].split("Publishers:")[0]
    assert f"{TEST_CAMERA}: sensor_msgs/msg/Image" in subscribers, out


def test_params_file_overrides_the_shipped_yaml(robot, ros2):
    out = ros2.until(["param", "get", "/evolution_node", "min_swap_interval_s"],
                     lambda o: "value is" in o, 60, "the parameter")
    assert out.strip() == "Double value is: 1.0"  # config/adaspring.yaml says 5.0


def test_topic_echo_prints_the_served_variant(robot, ros2, rclpy_node):
    camera = FakeCamera(rclpy_node)
    robot.wait_for(rclpy_node, lambda: camera.configs and camera.results, 90,
                   "a variant announced on /adaspring/config and a result")
    out = ros2.until(["topic", "echo", "--once", "/adaspring/config"],
                     lambda o: "config_id:" in o, 30, "the latched config")
    echoed = next(yaml.safe_load_all(out))
    # the fields agree with the id
    config = msg_convert.config_from_msg(SimpleNamespace(**echoed), DEFAULT_SPACE)
    assert config.id == echoed["config_id"]
    assert echoed["reason"] and echoed["predicted_accuracy_percent"] > 0
    start = len(camera.results)
    robot.wait_for(rclpy_node, lambda: len(camera.results) >= start + 3, 30, "3 more results")
    assert {r.config_id for r in camera.results[start:]} == {config.id}


def test_lambda2_set_after_fixed_lambdas_changes_the_next_decision(robot, ros2, rclpy_node):
    camera = FakeCamera(rclpy_node)
    robot.wait_for(rclpy_node, lambda: camera.configs, 90, "the variant on /adaspring/config")
    assert ros2("param", "set", "/evolution_node", "adaptive_lambdas", "false").strip() \
        == "Set parameter successful"
    assert ros2("param", "set", "/evolution_node", "lambda2", "0.7").strip() \
        == "Set parameter successful"

    def weighed() -> int | None:
        return next((i for i, c in enumerate(camera.configs) if "λ2 0.70" in c.reason), None)

    robot.wait_for(rclpy_node, lambda: weighed() is not None, 30,
                   "a swap decided with λ2 0.70")
    before, after = camera.configs[weighed() - 1], camera.configs[weighed()]
    assert after.config_id != before.config_id
    assert "(fixed)" in after.reason, after.reason
    # Energy now counts: a variant that costs less per forward pass in the profile table (the
    # messages' predictions are not comparable: the later one adds the measured rest of a frame).
    table = ProfileTable.load(paths.default_profile_table())
    energy = {c: table.get(c).energy_mj for c in (before.config_id, after.config_id)}
    assert energy[after.config_id] < energy[before.config_id], energy


def test_param_load_and_dump_round_trip_the_shipped_yaml(robot, ros2, tmp_path):
    shipped = yaml.safe_load((REPO / "config" / "adaspring.yaml").read_text())
    values = shipped["evolution_node"]["ros__parameters"]
    # The `/**` section is the one `ros2 param load` of ros2param 0.36.1 with rclpy 9.1 reads
    # (a section named after the node is skipped: rclpy#1550); every ROS 2 release reads it.
    loadable = tmp_path / "evolution.yaml"
    loadable.write_text(yaml.safe_dump({"/**": {"ros__parameters": values}}))
    result = ros2.run("param", "load", "/evolution_node", str(loadable))
    assert result.returncode == 0, result.stdout + result.stderr
    loaded = set(re.findall(r"Set parameter (\w+) successful", result.stdout))
    refused = set(re.findall(r"Set parameter (\w+) failed: .*read-only", result.stderr))
    assert loaded | refused == set(values) and refused == {"engine", "profile_table"}, result

    dumped = yaml.safe_load(ros2("param", "dump", "/evolution_node"))
    node_values = dumped["/evolution_node"]["ros__parameters"]
    assert set(node_values) - set(values) <= BUILT_IN
    assert {k: node_values[k] for k in values} == values  # overrides gone, shipped values back


def test_ctrl_c_stops_every_node_cleanly(robot, ros2):
    wait_for_nodes(ros2, NODES)
    assert set(robot.node_pids()) == set(NODES)
    assert_clean_stop(robot, signal.SIGINT)
    assert robot.output().count("process has finished cleanly") == len(NODES)


# -- ros2 launch adaspring_ros demo.launch.py -------------------------------------------------

@pytest.fixture(scope="module")
def demo(ros2):
    launch = ros2.launch("demo", "demo.launch.py")
    yield launch
    launch.kill()


def test_demo_brings_up_four_nodes_that_evolve(demo, ros2, rclpy_node):
    from adaspring_ros.msg import CompressionConfig

    from adaspring_ros.nodes.qos import CONFIG_QOS

    configs: list = []
    rclpy_node.create_subscription(CompressionConfig, "/adaspring/config", configs.append,
                                   CONFIG_QOS)
    listed = wait_for_nodes(ros2, DEMO_NODES)
    # besides them only this test's node and launch's own
    assert all(n.startswith(("/test_", "/launch_ros_"))
               for n in listed - {f"/{n}" for n in DEMO_NODES}), listed
    # The perception node starts on the full network; the scenario's battery (45 %) makes
    # energy count, and the evolution node swaps away from it.
    demo.wait_for(rclpy_node, lambda: any(c.config_id != FULL for c in configs), 90,
                  "a swap away from the full network")


def test_sigterm_stops_every_node_cleanly(demo, ros2):
    wait_for_nodes(ros2, DEMO_NODES)
    assert set(demo.node_pids()) == set(DEMO_NODES)
    # ros2 launch itself (launch 3.7.1) is killed by SIGTERM at once without stopping its
    # processes (ros2/launch#666); the nodes then stop on the SIGINT the kernel sends them when
    # their launcher dies (nodes/common.py die_with_launcher).
    assert_clean_stop(demo, signal.SIGTERM, allowed=(0, -signal.SIGTERM))


# -- managed:=true, with and without autostart --------------------------------------------------

def wait_for_state(ros2: Ros2, state: str) -> None:
    """Until ``ros2 lifecycle get /perception_node`` prints ``state`` (e.g. "active [3]")."""
    ros2.until(["lifecycle", "get", "/perception_node"], lambda o: o.strip() == state, 60, state)


def test_managed_launch_takes_perception_to_active(ros2):
    launch = ros2.launch("managed", "adaspring.launch.py", "managed:=true")
    try:
        wait_for_state(ros2, "active [3]")
        assert_clean_stop(launch, signal.SIGINT)
    finally:
        launch.kill()


def test_managed_without_autostart_waits_for_lifecycle_set(ros2, rclpy_node):
    launch = ros2.launch("managed_manual", "adaspring.launch.py", "managed:=true",
                         "autostart:=false")
    try:
        wait_for_state(ros2, "unconfigured [1]")
        assert rclpy_node.count_publishers("/adaspring/result") == 0
        assert ros2("lifecycle", "set", "/perception_node", "configure").strip() \
            == "Transitioning successful"
        wait_for_state(ros2, "inactive [2]")
        assert ros2("lifecycle", "set", "/perception_node", "activate").strip() \
            == "Transitioning successful"
        wait_for_state(ros2, "active [3]")
        launch.wait_for(rclpy_node, lambda: rclpy_node.count_subscribers("/camera/image_raw"),
                        30, "the camera subscription of the active node")
        assert_clean_stop(launch, signal.SIGINT)
    finally:
        launch.kill()


# -- a parameter file with a value a node refuses ---------------------------------------------

@pytest.mark.parametrize("node, name, value, line", [
    ("perception_node", "engine", "tensorrt",  # not among the choices
     r"cannot start: engine: 'tensorrt' is not one of onnxruntime, torch"),
    ("evolution_node", "headroom", 0.95,  # out of the range 0..0.9
     r"cannot start: .*headroom out of range Min: 0\.0, Max: 0\.9, value: 0\.95"),
], ids=["unknown", "out_of_range"])
def test_a_refused_value_in_params_file_ends_the_launch(ros2, tmp_path, node, name, value, line):
    shipped = yaml.safe_load((REPO / "config" / "adaspring.yaml").read_text())
    shipped[node]["ros__parameters"][name] = value
    params = tmp_path / "bad.yaml"
    params.write_text(yaml.safe_dump(shipped))
    launch = ros2.launch(f"refused_{name}", "adaspring.launch.py", f"params_file:={params}")
    try:
        launch.proc.wait(90)  # the launch ends by itself
    except subprocess.TimeoutExpired:
        pytest.fail(f"the launch kept running:\n{launch.output()[-3000:]}")
    finally:
        launch.kill()
    out = launch.output()
    assert re.search(rf"\[FATAL\] \[[\d.]+\] \[{node}\]: {line}", out), out
    assert re.search(rf"\[{node}-\d+\]: process has died \[pid \d+, exit code 2,", out), out
    # the others, whose parameters were fine, were stopped by the launch: nothing runs
    for other in set(NODES) - {node}:
        assert re.search(rf"\[{other}-\d+\]: process has finished cleanly", out), out
    assert all(gone(pid) for pid in launch.node_pids().values())
    assert "Traceback" not in launch.logs(), launch.logs()[-6000:]
