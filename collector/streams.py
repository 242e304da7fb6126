"""The collector's outbox streams and their policies (handed to the outbox and the
publisher at start: ``buffer/streams.py`` says what each flag does).

| stream | durable | published | sheddable | live | holds |
|---|---|---|---|---|---|
| events | yes | yes | no | no | every event kind of ``collector/event_kinds.py`` |
| cmd_result | yes | yes | no | no | replies to commands |
| telemetry | no (group commit) | ``[telemetry] publish`` | yes | yes | one row per poll |
| telemetry_raw | no | no (history) | no | no | every value when a filter held some back |
| gauge | yes | no (history) | no | no | raw gauge values (audit, replay) |
"""

from __future__ import annotations

from buffer.store import OutboxRow
from buffer.streams import StreamPolicy, Streams
from collector import event_kinds

EVENTS = "events"
TELEMETRY = "telemetry"
TELEMETRY_RAW = "telemetry_raw"
GAUGE = "gauge"
CMD_RESULT = "cmd_result"


def streams(publish_telemetry: bool = True) -> Streams:
    """The policies; ``publish_telemetry`` false keeps telemetry as history only."""
    return Streams((
        StreamPolicy(EVENTS, durable=True, published=True),
        StreamPolicy(CMD_RESULT, durable=True, published=True),
        StreamPolicy(TELEMETRY, durable=False, published=publish_telemetry, sheddable=True,
                     live=True),
        StreamPolicy(TELEMETRY_RAW, durable=False, published=False),
        StreamPolicy(GAUGE, durable=True, published=False),
    ))


STREAMS = streams()
assert {k.stream for k in event_kinds.KINDS.values()} <= {p.name for p in STREAMS}


def row(policy: StreamPolicy, press: str, seq: int, topic: str, payload: bytes) -> OutboxRow:
    """An outbox row of ``policy``'s stream, flagged as the policy says."""
    return OutboxRow(press, policy.name, seq, topic, payload, durable=policy.durable,
                     delivered=not policy.published)
