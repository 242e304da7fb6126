"""Sparkplug B 3.0 output (docs/sparkplug.md): the telemetry as an edge node's DDATA, one
device per press, on its own MQTT connection; quality events keep their JSON contract.

``schema`` (the Eclipse Tahu protobuf schema, compiled: ``descriptor``), ``codec`` (pure:
topics, metric models, payloads), ``edge`` (the edge node: births, deaths, data, the
primary host's STATE, rebirth requests), ``setup`` (the node of a loaded config).
Imported only when ``[sparkplug]`` is enabled.
"""
