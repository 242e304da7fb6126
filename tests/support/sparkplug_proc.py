"""Run a Sparkplug edge node in its own process (tests SIGKILL it to see the NDEATH will).

usage: python -m tests.support.sparkplug_proc DB PORT GROUP NODE PRESS...
"""

from __future__ import annotations

import asyncio
import sys

from buffer.store import Outbox
from collector.sparkplug.edge import EdgeNode, EdgeSettings
from collector.streams import STREAMS


async def main(db: str, port: int, group: str, node: str, presses: list[str]) -> None:
    outbox = Outbox.open(db, commit_interval_s=0.002, streams=STREAMS)
    edge = EdgeNode(outbox, EdgeSettings(group, node), "127.0.0.1", port, f"{node}-spb",
                    {p: [("count", None)] for p in presses}, reconnect_max_s=0.5)
    try:
        await edge.run()
    finally:
        outbox.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5:]))
