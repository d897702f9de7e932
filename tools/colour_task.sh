#!/usr/bin/env bash
# The colour example's images, built from Debian's clip-art packages (installed when missing):
#   tools/colour_task.sh OUT [SPLITS]   e.g. models/colour/data test   (the demo replays test/)
# Deterministic (tools/build_colour_task.py); skipped when OUT already holds the task this
# builder makes with these splits (OUT/.built names both), rebuilt when either changed: a task
# of another builder has other drawings, and a model would be scored on objects it never saw.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:?usage: tools/colour_task.sh OUT [SPLITS]}
SPLITS=${2:-train,val,test}
PY=${PY:-.venv/bin/python}
STAMP="$(sha256sum tools/build_colour_task.py | cut -d' ' -f1) splits=$SPLITS"
if [ -f "$OUT/task.json" ] && [ "$(cat "$OUT/.built" 2>/dev/null)" = "$STAMP" ]; then
  echo "[colour-task] $OUT is built"; exit 0
fi
if [ -e "$OUT" ]; then
  echo "[colour-task] $OUT was built by another version of the builder or other splits: rebuilding"
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
echo "$STAMP" > "$TMP/.built"
rm -rf "$OUT"
mv "$TMP" "$OUT"
