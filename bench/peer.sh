#!/usr/bin/env bash
# PEER_CMD for ../shared/nodered-bench (PEER=cmd): render a press-collector config for
# this run from the harness's environment (P presses on MODBUS_BASE_PORT.., R registers
# read as one block 0..R-1, every T ms; broker 127.0.0.1:BROKER_PORT; topics under
# TOPIC_PREFIX; buffer in PEER_RUN_DIR), then exec the daemon so that it keeps the PID
# the harness samples.
set -eu
REPO=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-$REPO/.venv/bin/python}
[ -x "$PY" ] || PY=python3
cfg="$PEER_RUN_DIR/press-collector"
mkdir -p "$cfg/presses"
"$PY" "$REPO/bench/peer_config.py" "$cfg"
cd "$REPO"
exec "$PY" -m collector.cli --log-level "${PEER_LOG_LEVEL:-WARNING}" run --config-dir "$cfg"
