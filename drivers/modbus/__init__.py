"""Modbus TCP and RTU: one poll engine (``engine``), two framings (``tcp``, ``rtu``) over
shared PDUs (``pdu``), the tag codec (``codec``), the drivers (``driver``), the probes
(``probe``) and the protocol's registry entry (``plugin``). See docs/modbus.md."""

from drivers.registry import Plugin, register

PLUGIN = register(Plugin(
    "modbus", "plc", "Modbus TCP, Modbus RTU on a serial bus, RTU over TCP (docs/modbus.md)",
    "drivers.modbus.plugin", protocols=("modbus_tcp", "modbus_rtu", "modbus_rtu_tcp")))
