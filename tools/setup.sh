#!/usr/bin/env bash
# Set up everything the package needs on a fresh Debian/Ubuntu machine, into ./.venv:
#   Debian packages (dataset-fashion-mnist, cmake, a C/C++ compiler) when missing,
#   the ROS 2 Kilted wheels + torch (CPU) + dev tools in one pip call,
#   the repair of the wheels' baked-in CMake paths, the ROS 2 command line and vision_msgs from
#   ../shared/ros2_cli where it exists, and the colcon build of msg/ + srv/ into the venv.
# Idempotent: each step is skipped when its inputs have not changed since it last succeeded.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=${VENV:-$ROOT/.venv}
PYTHON=${PYTHON:-python3}
say() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

# --- Debian packages ---------------------------------------------------------------------------
need_apt=()
[ -f /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz ] || need_apt+=(dataset-fashion-mnist)
command -v cmake >/dev/null || need_apt+=(cmake)
command -v g++ >/dev/null || need_apt+=(g++)
command -v make >/dev/null || need_apt+=(make)
"$PYTHON" -c 'import venv, ensurepip' 2>/dev/null || need_apt+=(python3-venv)
if [ ${#need_apt[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  say "apt-get install ${need_apt[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}"
fi

# --- Python venv and wheels --------------------------------------------------------------------
"$PYTHON" - <<'PY' || { echo "Python 3.10-3.13 is needed (ROS 2 Kilted wheels); set PYTHON=python3.X" >&2; exit 1; }
import sys; sys.exit(0 if (3, 10) <= sys.version_info[:2] <= (3, 13) else 1)
PY
[ -x "$VENV/bin/python" ] || { say "creating $VENV"; "$PYTHON" -m venv "$VENV"; }
req_hash=$(sha256sum tools/requirements.txt | cut -c1-16)
if [ ! -f "$VENV/.pip-$req_hash" ]; then
  say "pip install (ROS 2 wheels, torch CPU, tools) — a few minutes the first time"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -r tools/requirements.txt
  rm -f "$VENV"/.pip-* "$VENV"/.cmakefix-*
  touch "$VENV/.pip-$req_hash"
fi
if [ ! -f "$VENV/.cmakefix-$req_hash" ]; then
  "$VENV/bin/python" tools/fix_wheel_cmake_paths.py
  touch "$VENV/.cmakefix-$req_hash"
fi

# --- the ROS 2 command line (ros2 launch/topic/param/lifecycle) and vision_msgs -----------------
# No reachable registry has them; ../shared/ros2_cli does, beside a checkout on these machines
# (after the CMake fix above: it builds vision_msgs and composition_interfaces with colcon). A
# machine with a ros2 of its own (a robot's ROS install) keeps it, and so does a clone without
# ../shared: the tests that need `ros2` then use the system's, or skip and say why.
ros2_cli=$ROOT/../shared/ros2_cli
own_ros2=$(command -v ros2 || true)
if [ -f "$ros2_cli/install.sh" ] && { [ -z "$own_ros2" ] || [ "$own_ros2" -ef "$VENV/bin/ros2" ]; }; then
  cli_hash=$( (echo "$req_hash"; cat "$ros2_cli/install.sh" "$ros2_cli"/wheels/*.whl) | sha256sum \
    | cut -c1-16)
  if [ ! -f "$VENV/.ros2cli-$cli_hash" ]; then
    say "installing the ROS 2 command line and vision_msgs from $ros2_cli (~35 s the first time)"
    bash "$ros2_cli/install.sh" "$VENV"
    rm -f "$VENV"/.ros2cli-*
    touch "$VENV/.ros2cli-$cli_hash"
  fi
fi

# --- colcon build of the interfaces and the package into the venv -------------------------------
# Everything the build installs: a change to any of it re-runs the (incremental) build.
build_hash=$(find package.xml CMakeLists.txt tools/requirements.txt msg srv scripts adaspring_ros launch \
  config models -type f ! -name '*.pyc' 2>/dev/null | LC_ALL=C sort | xargs cat | sha256sum | cut -c1-16)
if [ ! -f "$VENV/.build-$build_hash" ] || ! "$VENV/bin/python" -c 'import adaspring_ros.srv' 2>/dev/null; then
  say "colcon build (msg/, srv/, package) into $VENV"
  # The install copies files and never deletes: a module moved or removed in the tree would stay
  # importable from an earlier build, so the package's own Python files go first (the generated
  # msg/ and srv/ are rebuilt by the same build).
  site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  if [ -d "$site/adaspring_ros" ]; then
    find "$site/adaspring_ros" -mindepth 1 -maxdepth 1 ! -name msg ! -name srv ! -name '*.so' \
      ! -name '_adaspring_ros_s.*' -exec rm -rf {} +
  fi
  (
    export VIRTUAL_ENV=$VENV AMENT_PREFIX_PATH=$VENV PATH="$VENV/bin:$PATH"
    unset _ROS_WHEELS_BOOTSTRAP_COMPLETE
    colcon --log-base build/colcon-log build --merge-install --install-base "$VENV" \
      --build-base build --base-paths "$ROOT" --packages-select adaspring_ros \
      --cmake-args -DBUILD_TESTING=OFF -DPython3_EXECUTABLE="$VENV/bin/python" \
      --event-handlers console_cohesion- summary+
  )
  rm -f "$VENV"/.build-*
  touch "$VENV/.build-$build_hash"
fi
# --- the `adaspring` command ------------------------------------------------------------------
# colcon ignores setup.py (and its console_scripts entry point) in an ament_cmake package, so the
# command the docs use is written here: a two-line launcher of the package colcon installed.
launcher="#!$VENV/bin/python
import sys
from adaspring_ros.cli import main
sys.exit(main())"
if [ ! -x "$VENV/bin/adaspring" ] || [ "$(cat "$VENV/bin/adaspring")" != "$launcher" ]; then
  say "installing the adaspring command into $VENV/bin"
  printf '%s\n' "$launcher" > "$VENV/bin/adaspring"
  chmod +x "$VENV/bin/adaspring"
fi
say "ready: $VENV"
