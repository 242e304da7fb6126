"""Sparkplug B 3.0 messages, pure: topics, device metric models with aliases, payloads.

No I/O and no clock: times come in as milliseconds. The edge node (``edge.py``) decides
what to send when; this module only says how it looks on the wire.

Metrics of a device (one device per press)
------------------------------------------
- every PLC tag of the press, under its tag name, typed from the tag's config where the
  config says (Modbus: ``int16`` -> Int16, ..., ``float32`` -> Float, a scaled integer ->
  Double) and from its first value otherwise (OPC UA tags carry no type in the config);
- ``Press/state``, ``Press/part_number``, ``Press/die_id``, ``Press/material_lot``
  (String): the workflow state and ids the JSON telemetry carries in its ``context``;
- ``Press/telemetry_seq`` (UInt64): the seq of the telemetry row a DDATA carries, the key
  that links it to the buffer and to the JSON contract (``(press, "telemetry", seq)``).

Aliases are numbered per edge node (unique across all its devices, as the spec asks), in
the order metrics become known, and never change within the process: a rebirth sends the
same aliases again. A value that does not fit its metric's datatype (an OPC UA node that
turned from Int64 to Double) or a tag the model does not know yet changes the model and
the device is born again (DBIRTH) before that value goes out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from collector.sparkplug.schema import DATATYPES, Payload

NAMESPACE = "spBv1.0"
BDSEQ = "bdSeq"
REBIRTH = "Node Control/Rebirth"
PRESS_METRICS = ("Press/state", "Press/part_number", "Press/die_id", "Press/material_lot")
CONTEXT_KEYS = ("state", "part_number", "die_id", "material_lot")
TELEMETRY_SEQ = "Press/telemetry_seq"

INT8, INT16, INT32, INT64 = (DATATYPES[n] for n in ("Int8", "Int16", "Int32", "Int64"))
UINT8, UINT16, UINT32, UINT64 = (DATATYPES[n] for n in ("UInt8", "UInt16", "UInt32", "UInt64"))
FLOAT, DOUBLE = DATATYPES["Float"], DATATYPES["Double"]
BOOLEAN, STRING = DATATYPES["Boolean"], DATATYPES["String"]

# integer datatype -> (lowest, highest) value, and the protobuf field it travels in
_INT_RANGE = {INT8: (-(2**7), 2**7 - 1), INT16: (-(2**15), 2**15 - 1),
              INT32: (-(2**31), 2**31 - 1), INT64: (-(2**63), 2**63 - 1),
              UINT8: (0, 2**8 - 1), UINT16: (0, 2**16 - 1), UINT32: (0, 2**32 - 1),
              UINT64: (0, 2**64 - 1)}
_LONG = {INT64, UINT64}

# Modbus tag types of collector/config/modbus.py -> Sparkplug datatypes (unscaled)
TAG_TYPES = {"bool": BOOLEAN, "int16": INT16, "uint16": UINT16, "int32": INT32,
             "uint32": UINT32, "float32": FLOAT, "float64": DOUBLE, "string": STRING}


class Topics:
    """The edge node's topics: ``spBv1.0/{group}/{TYPE}/{edge node}[/{device}]``."""

    def __init__(self, group: str, node: str) -> None:
        self.group, self.node = group, node
        base = f"{NAMESPACE}/{group}"
        self.nbirth = f"{base}/NBIRTH/{node}"
        self.ndeath = f"{base}/NDEATH/{node}"
        self.ncmd = f"{base}/NCMD/{node}"
        self.dcmd = f"{base}/DCMD/{node}/+"
        self._device = {kind: f"{base}/{kind}/{node}/" for kind in ("DBIRTH", "DDATA", "DDEATH")}

    def device(self, kind: str, device: str) -> str:
        return self._device[kind] + device

    @staticmethod
    def state(host_id: str) -> str:
        """The primary host application's STATE topic (Sparkplug 3.0)."""
        return f"{NAMESPACE}/STATE/{host_id}"


def tag_datatype(tag_type: str | None, scale: float = 1.0, offset: float = 0.0) -> int | None:
    """The datatype of a configured tag; None when the config does not say (OPC UA)."""
    if tag_type is None:
        return None
    if tag_type not in ("bool", "string") and (scale != 1.0 or offset != 0.0):
        return DOUBLE  # the codec scales into a float
    return TAG_TYPES[tag_type]


def infer_datatype(value: Any) -> int:
    """The datatype a value of unknown type gets (its first value, or after a drift)."""
    if isinstance(value, bool):
        return BOOLEAN
    if isinstance(value, int):
        return INT64 if value < 2**63 else UINT64
    if isinstance(value, float):
        return DOUBLE
    return STRING


def fits(datatype: int, value: Any) -> bool:
    """Whether ``value`` can travel as ``datatype`` without loss or a wrong meaning."""
    if datatype == BOOLEAN:
        return isinstance(value, bool)
    if datatype == STRING:
        return isinstance(value, str)
    if datatype in (FLOAT, DOUBLE):
        return isinstance(value, float | int) and not isinstance(value, bool)
    bounds = _INT_RANGE.get(datatype)
    if bounds is None:
        return False
    return isinstance(value, int) and not isinstance(value, bool) \
        and bounds[0] <= value <= bounds[1]


@dataclass(slots=True)
class MetricSpec:
    name: str
    alias: int
    datatype: int | None  # None: not known yet (no config type, no value seen)


@dataclass
class DeviceModel:
    """The metrics of one device (press): name -> spec, in birth order."""

    device: str
    metrics: dict[str, MetricSpec] = field(default_factory=dict)

    def spec(self, name: str) -> MetricSpec | None:
        return self.metrics.get(name)


class NodeModel:
    """Every device of the edge node and the node-wide alias counter."""

    def __init__(self) -> None:
        self.devices: dict[str, DeviceModel] = {}
        self._next_alias = 1

    def device(self, device: str) -> DeviceModel:
        model = self.devices.get(device)
        if model is None:
            model = self.devices[device] = DeviceModel(device)
            for name in PRESS_METRICS:
                self._add(model, name, STRING)
            self._add(model, TELEMETRY_SEQ, UINT64)
        return model

    def add_tags(self, device: str, tags: Iterable[tuple[str, int | None]]) -> DeviceModel:
        """Declare the configured tags of a device (name, datatype or None)."""
        model = self.device(device)
        for name, datatype in tags:
            if name not in model.metrics:
                self._add(model, name, datatype)
        return model

    def _add(self, model: DeviceModel, name: str, datatype: int | None) -> MetricSpec:
        spec = model.metrics[name] = MetricSpec(name, self._next_alias, datatype)
        self._next_alias += 1
        return spec

    def absorb(self, device: str, values: Mapping[str, Any]) -> bool:
        """Make the model fit ``values``: unknown tags added, untyped metrics typed, a
        drifted datatype changed. True when the model changed (the device must be born
        again before these values go out)."""
        model = self.device(device)
        changed = False
        metrics = model.metrics
        for name, value in values.items():
            if value is None:
                continue
            spec = metrics.get(name)
            if spec is None:
                self._add(model, name, infer_datatype(value))
                changed = True
            elif spec.datatype is None or not fits(spec.datatype, value):
                spec.datatype = infer_datatype(value)
                changed = True
        return changed


@dataclass(frozen=True, slots=True)
class TelemetryRow:
    """One telemetry row of the outbox, as the edge node needs it."""

    row_id: int
    press: str
    seq: int
    ts_ms: int
    values: dict[str, Any]
    errors: dict[str, str]
    context: dict[str, Any]


def iso_to_ms(text: str) -> int:
    """``2026-11-25T09:00:00.123Z`` (the envelope's ``ts``) -> epoch milliseconds."""
    return round(datetime.fromisoformat(text).timestamp() * 1000)


def parse_telemetry(row_id: int, payload: bytes) -> TelemetryRow:
    """A JSON telemetry row (collector/messages.py ``encode_telemetry``)."""
    doc = orjson.loads(payload)
    data = doc["data"]
    return TelemetryRow(row_id, doc["press"], doc["seq"], iso_to_ms(doc["ts"]),
                        data.get("values") or {}, data.get("errors") or {},
                        doc.get("context") or {})


_FIELD = {BOOLEAN: "boolean_value", STRING: "string_value", DOUBLE: "double_value",
          FLOAT: "float_value", INT64: "long_value", UINT64: "long_value"}


def _metric(payload: Any, spec: MetricSpec, ts_ms: int, value: Any, birth: bool,
            historical: bool = False) -> None:
    """One metric, added in one call (keyword arguments: half the cost of setting each
    field on the message; bench/sparkplug_bench.py). Signed integers travel as two's
    complement in the unsigned field of their size, as the spec's datatype table and
    Tahu's encoders do."""
    datatype = spec.datatype
    fields: dict[str, Any] = {"alias": spec.alias, "timestamp": ts_ms}
    if birth:
        fields["name"] = spec.name
        fields["datatype"] = datatype if datatype is not None else STRING
    if historical:
        fields["is_historical"] = True
    if value is None or datatype is None or not fits(datatype, value):
        fields["is_null"] = True
    elif datatype in (DOUBLE, FLOAT):
        fields[_FIELD[datatype]] = float(value)
    elif datatype in _LONG:
        fields["long_value"] = value & 0xFFFFFFFFFFFFFFFF
    elif datatype in _INT_RANGE:
        fields["int_value"] = value & 0xFFFFFFFF
    else:
        fields[_FIELD[datatype]] = value
    payload.metrics.add(**fields)


def _row_metrics(payload: Any, model: DeviceModel, row: TelemetryRow, birth: bool,
                 historical: bool) -> None:
    ts = row.ts_ms
    metrics = model.metrics
    for name, key in zip(PRESS_METRICS, CONTEXT_KEYS, strict=True):
        _metric(payload, metrics[name], ts, row.context.get(key), birth, historical)
    _metric(payload, metrics[TELEMETRY_SEQ], ts, row.seq, birth, historical)
    errors = row.errors
    for name, value in row.values.items():
        spec = metrics.get(name)
        if spec is not None:
            _metric(payload, spec, ts, None if name in errors else value, birth, historical)
    for name in errors:  # a tag that failed this poll and has no value in it
        spec = metrics.get(name)
        if spec is not None and name not in row.values:
            _metric(payload, spec, ts, None, birth, historical)


def nbirth(ts_ms: int, seq: int, bdseq: int) -> bytes:
    """NBIRTH: bdSeq (Int64, the will's value) and ``Node Control/Rebirth`` (Boolean
    false, never aliased so that any host can ask for a rebirth)."""
    payload = Payload(timestamp=ts_ms, seq=seq)
    m = payload.metrics.add(name=BDSEQ, timestamp=ts_ms, datatype=INT64)
    m.long_value = bdseq
    m = payload.metrics.add(name=REBIRTH, timestamp=ts_ms, datatype=BOOLEAN)
    m.boolean_value = False
    return payload.SerializeToString()


def ndeath(bdseq: int, ts_ms: int | None = None) -> bytes:
    """NDEATH (the will, and the one published before a deliberate disconnect): the
    bdSeq metric only, no seq."""
    payload = Payload() if ts_ms is None else Payload(timestamp=ts_ms)
    m = payload.metrics.add(name=BDSEQ, datatype=INT64)
    m.long_value = bdseq
    return payload.SerializeToString()


def dbirth(model: DeviceModel, seq: int, ts_ms: int, current: TelemetryRow | None) -> bytes:
    """DBIRTH: every metric of the device with name, alias, datatype and its current
    value (from ``current``, the press's newest row) or ``is_null``."""
    payload = Payload(timestamp=ts_ms, seq=seq)
    if current is not None:
        _row_metrics(payload, model, current, birth=True, historical=False)
        seen = {*PRESS_METRICS, TELEMETRY_SEQ, *current.values, *current.errors}
    else:
        seen = set()
    for spec in model.metrics.values():  # the rest: known, no current value
        if spec.name not in seen:
            _metric(payload, spec, ts_ms, None, birth=True)
    return payload.SerializeToString()


def ddata(model: DeviceModel, seq: int, ts_ms: int, row: TelemetryRow,
          historical: bool) -> bytes:
    """DDATA: one telemetry row (aliases only; per-metric timestamp = acquisition time;
    ``is_historical`` for rows stored while no host listened)."""
    payload = Payload(timestamp=ts_ms, seq=seq)
    _row_metrics(payload, model, row, birth=False, historical=historical)
    return payload.SerializeToString()


def ddeath(seq: int, ts_ms: int) -> bytes:
    return Payload(timestamp=ts_ms, seq=seq).SerializeToString()


def rebirth_requested(payload: bytes) -> bool:
    """An NCMD asking for a rebirth: a metric ``Node Control/Rebirth`` set to true."""
    try:
        message = Payload.FromString(payload)
    except Exception:  # not a Sparkplug payload: nobody asked for anything
        return False
    return any(m.name == REBIRTH and m.WhichOneof("value") == "boolean_value"
               and m.boolean_value for m in message.metrics)


def parse_state(payload: bytes) -> tuple[bool, int] | None:
    """A Sparkplug 3.0 STATE payload ``{"online": bool, "timestamp": ms}``; None when it
    is not one (logged by the caller, ignored)."""
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(doc, dict):
        return None
    online, ts = doc.get("online"), doc.get("timestamp")
    if not isinstance(online, bool) or not isinstance(ts, int) or isinstance(ts, bool):
        return None
    return online, ts
