#!/usr/bin/env bash
# Open TensorBoard on the newest sweep (or the folder given), bound to this machine only.
#   scripts/tensorboard.sh                                   # newest outputs/multirun/<date>/<time>/tb
#   scripts/tensorboard.sh outputs/multirun/2026-11-27/13-30-20
#   PORT=6007 scripts/tensorboard.sh                         # another port (default 6006)
# From another machine: ssh -L 6006:127.0.0.1:6006 <this machine>, then open http://127.0.0.1:6006
set -euo pipefail
sweep="${1:-$(ls -d outputs/multirun/*/* 2>/dev/null | sort | tail -n 1 || true)}"
if [ -z "$sweep" ] || [ ! -d "$sweep" ]; then
  echo "error: no sweep folder${1:+ at $1}; run a sweep first (python train.py -m ...) or give its folder" >&2
  exit 2
fi
logdir="$sweep"
[ -d "$sweep/tb" ] && logdir="$sweep/tb"
# the first page filtered to the curves (tagFilter: report/tbgroups.py's CURVES_FILTER, ^(train|val)/)
echo "tensorboard --logdir $logdir on http://127.0.0.1:${PORT:-6006}/?tagFilter=%5E%28train%7Cval%29%2F#timeseries" >&2
exec tensorboard --logdir "$logdir" --host 127.0.0.1 --port "${PORT:-6006}"
