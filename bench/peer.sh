#!/usr/bin/env bash
# PEER_CMD for ../shared/nodered-bench (PEER=cmd): render a press-collector config for
# this run from the harness's environment (P presses on MODBUS_BASE_PORT.., R registers
# read as one block 0..R-1, every T ms; broker 127.0.0.1:BROKER_PORT; topics under
# TOPIC_PREFIX; buffer in PEER_RUN_DIR), then exec the daemon so that it keeps the PID
# the harness samples. The daemon runs on the project's venv python (PEER_PYTHON, set by
# bench/compare.py; default .venv/bin/python): never on the harness's or the system's
# python, which lack the project's dependencies.
set -eu
REPO=$(cd "$(dirname "$0")/.." && pwd)
PY=${PEER_PYTHON:-$REPO/.venv/bin/python}
if [ ! -x "$PY" ]; then
  echo "bench/peer.sh: $PY not found: run 'make setup' (or make bench-compare, which does)" >&2
  exit 1
fi
cfg="$PEER_RUN_DIR/press-collector"
mkdir -p "$cfg/presses"
"$PY" "$REPO/bench/peer_config.py" "$cfg"
cd "$REPO"
exec "$PY" -m collector.cli --log-level "${PEER_LOG_LEVEL:-WARNING}" run --config-dir "$cfg"
