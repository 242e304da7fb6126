"""Every driver package, one line each: importing a package registers it
(``drivers.registry``). Adding a protocol = a new package + one line here."""

import drivers.gauge
import drivers.modbus
import drivers.opcua  # noqa: F401  opcua
