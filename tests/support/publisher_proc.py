"""Run a Publisher in its own process (tests SIGKILL it to see the last will).

usage: python -m tests.support.publisher_proc DB PORT CLIENT_ID STATUS_TOPIC
"""

from __future__ import annotations

import asyncio
import sys

from buffer.store import Outbox
from collector.publisher import Publisher


async def main(db: str, port: int, client_id: str, status_topic: str) -> None:
    outbox = Outbox.open(db)
    publisher = Publisher(outbox, "127.0.0.1", port, client_id, status_topic,
                          reconnect_max_s=0.5)
    try:
        await publisher.run()
    finally:
        outbox.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]))
