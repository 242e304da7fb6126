"""The Sparkplug B protobuf message classes, built by the protobuf runtime from the
compiled Eclipse Tahu schema (``descriptor.py``, generated from ``sparkplug_b.proto``).

A private ``DescriptorPool``: another library in the same process that registers the
same Tahu schema in the default pool (most Sparkplug packages ship a ``sparkplug_b_pb2``)
cannot clash with ours. Building the classes from a descriptor instead of shipping
protoc's ``_pb2`` module keeps us off the gencode/runtime version check (a ``_pb2``
compiled for one protobuf major version warns or fails under the next one): the
descriptor format is the stable part of protobuf.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pool, message_factory

from collector.sparkplug.descriptor import FILE_DESCRIPTOR

PACKAGE = "org.eclipse.tahu.protobuf"

_pool = descriptor_pool.DescriptorPool()
_pool.AddSerializedFile(FILE_DESCRIPTOR)

Payload: Any = message_factory.GetMessageClass(_pool.FindMessageTypeByName(
    f"{PACKAGE}.Payload"))
"""``org.eclipse.tahu.protobuf.Payload``: ``timestamp``, ``metrics``, ``seq``, ..."""

_datatypes = _pool.FindEnumTypeByName(f"{PACKAGE}.DataType")
DATATYPES: dict[str, int] = {v.name: v.number for v in _datatypes.values}
"""Sparkplug data type name -> number, from the schema's ``DataType`` enum."""
