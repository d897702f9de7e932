#!/usr/bin/env bash
# The colour example's images, built from Debian's clip-art packages (installed when missing):
#   tools/colour_task.sh OUT [SPLITS]   e.g. models/colour/data test   (the demo replays test/)
# Deterministic (tools/build_colour_task.py); skipped when OUT already holds the task.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:?usage: tools/colour_task.sh OUT [SPLITS]}
SPLITS=${2:-train,val,test}
PY=${PY:-.venv/bin/python}
if [ -f "$OUT/task.json" ]; then
  echo "[colour-task] $OUT is built"; exit 0
fi
need=()
[ -d /usr/share/openclipart/png ] || need+=(openclipart-png)
[ -d /usr/share/tuxpaint/stamps ] || need+=(tuxpaint-stamps-default)
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "[colour-task] apt-get install ${need[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}"
fi
# Built beside OUT and moved into place, so an interrupted build leaves nothing half-written.
TMP="$OUT.partial"
rm -rf "$TMP"
"$PY" tools/build_colour_task.py --out "$TMP" --splits "$SPLITS"
mv "$TMP" "$OUT"
