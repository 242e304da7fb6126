"""The edge node of a loaded config: the daemon's one way to build it (kept apart from
``edge`` so that the node itself does not depend on the config's shape)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from buffer.store import Outbox
from collector.sparkplug import codec
from collector.sparkplug.edge import EdgeNode, EdgeSettings


def edge_node_from_config(config: Any, outbox: Outbox, host_id: str, password: str | None,
                          tls: Any, plc_online: Callable[[str], bool] | None = None
                          ) -> EdgeNode:
    """The edge node of a loaded config (``collector.config.LoadedConfig``): the
    ``[broker]`` connection settings, client id ``{broker client id}-spb``."""
    cfg = config.collector
    spb = cfg.sparkplug
    client_id = f"{cfg.broker.client_id or f'press-collector-{host_id}'}-spb"
    return EdgeNode(outbox, EdgeSettings(spb.group_id, spb.edge_node_id or host_id,
                                         spb.primary_host_id),
                    cfg.broker.host, cfg.broker.port, client_id,
                    device_tags(config.presses.values()), username=cfg.broker.username or None,
                    password=password, tls=tls, keepalive=cfg.broker.keepalive_s,
                    window=cfg.broker.max_inflight, replay_rate=cfg.broker.replay_rate,
                    reconnect_max_s=cfg.broker.reconnect_max_s, plc_online=plc_online)


def device_tags(presses: Iterable[Any]) -> dict[str, list[tuple[str, int | None]]]:
    """press id -> its tags (name, datatype or None) from the press configs."""
    out: dict[str, list[tuple[str, int | None]]] = {}
    for press in presses:
        out[press.id] = [(t.name, codec.tag_datatype(getattr(t, "type", None),
                                                     getattr(t, "scale", 1.0),
                                                     getattr(t, "offset", 0.0)))
                         for t in press.plc.tags]
    return out
