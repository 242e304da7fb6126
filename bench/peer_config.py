"""Config dir for the Node-RED harness's PEER=cmd run, from its environment variables.

Press i is ``p{i}`` on MODBUS_BASE_PORT + i - 1 with tags ``r0``..``r{R-1}`` (uint16,
holding registers 0..R-1: one read request per poll, as the harness counts them).
PEER_CACHE_MB: the daemon's ``buffer.cache_mb`` (default: the daemon's own), for A/B runs.
Topics: ``{TOPIC_PREFIX}press-collector/p{i}/telemetry`` (read by bench/parse_batch.py).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def main() -> None:
    cfg = Path(sys.argv[1])
    env = os.environ
    presses, regs, period = int(env["P"]), int(env["R"]), int(env["T"])
    base, broker = int(env["MODBUS_BASE_PORT"]), int(env["BROKER_PORT"])
    prefix = env.get("TOPIC_PREFIX", "bench/")
    commit_ms = int(env.get("PEER_COMMIT_MS", "2"))
    (cfg / "presses").mkdir(parents=True, exist_ok=True)
    (cfg / "collector.toml").write_text(
        f'[site]\nname = "bench"\ntopic_root = "{prefix}press-collector"\n'
        f'host_id = "bench"\n\n[broker]\nhost = "127.0.0.1"\nport = {broker}\n'
        f'max_inflight = {int(env.get("PEER_MAX_INFLIGHT", "200"))}\n\n'
        f'[buffer]\npath = "buffer.sqlite"\ncommit_interval_ms = {commit_ms}\n'
        + (f'cache_mb = {env["PEER_CACHE_MB"]}\n' if env.get("PEER_CACHE_MB") else ""))
    tags = "".join(f'[[plc.tags]]\nname = "r{r}"\naddress = {r}\n' for r in range(regs))
    for i in range(1, presses + 1):
        (cfg / "presses" / f"p{i}.toml").write_text(
            f'id = "p{i}"\n\n[plc]\nhost = "127.0.0.1"\nport = {base + i - 1}\n'
            f'poll_interval_ms = {period}\n\n{tags}')


if __name__ == "__main__":
    main()
