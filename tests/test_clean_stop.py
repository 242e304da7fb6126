"""A clean stop leaves the truth on the broker (issue 11): the retained collector status
says 'offline' with the stop time, and each press's retained state says the collector
is offline. Real Mosquitto, the Modbus press simulator, the daemon."""

from __future__ import annotations

import time
from datetime import datetime

import orjson

from collector.contract import validate_message
from collector.daemon import host_id
from tests.support.line import Line
from tests.support.subscriber import Subscriber


def parse_ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


async def test_clean_stop_publishes_stop_time_and_presses_unwatched(line: Line) -> None:
    await line.wait_event("p1", "setup")
    assert line.sub is not None
    await line.sub.wait_for(lambda msgs: any(
        m.topic == f"{line.root}/p1/state" and orjson.loads(m.payload)["plc_online"]
        for m in msgs))
    assert line.config is not None
    status_topic = f"{line.root}/_collector/{host_id(line.config)}/status"
    before_stop = time.time()
    await line.stop_daemon()
    after_stop = time.time()

    # a dashboard connecting afterwards gets the retained messages
    late = Subscriber("127.0.0.1", line.broker.port, [f"{line.root}/#"]).start()
    try:
        msgs = await late.wait_for(lambda ms: {m.topic for m in ms if m.retain} >= {
            f"{line.root}/p1/state", status_topic}, 10)
    finally:
        late.stop()
    retained = {m.topic: orjson.loads(m.payload) for m in msgs if m.retain}
    status = retained[status_topic]
    assert status["status"] == "offline"
    assert before_stop - 0.001 <= parse_ts(status["ts"]) <= after_stop + 0.001
    state = retained[f"{line.root}/p1/state"]
    assert state["collector_online"] is False and state["plc_online"] is False
    assert state["state"] == "awaiting_first_article"  # where the workflow was left
    assert before_stop - 0.001 <= parse_ts(state["ts"]) <= after_stop + 0.001
    for topic, payload in retained.items():
        assert validate_message(topic, line.root, payload) == [], topic
