"""Serial gauges: the shared record rules (``records``), one module per family
(``families/``, listed in ``presets``), the port reader (``reader``), the probe
(``probe``) and the registry entry (``plugin``). See docs/gauges.md."""

from drivers.registry import Plugin, register

PLUGIN = register(Plugin(
    "gauge", "gauge", "serial gauges: Mitutoyo, Sylvac, Mahr Millimar and OPTORS, Chicago, "
    "Metro, generic regex (docs/gauges.md)", "drivers.gauge.plugin"))
