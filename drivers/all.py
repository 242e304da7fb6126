"""Every driver package, one line each, in the order the registry lists them (the order
of ``probe`` subcommands, of the protocol values in messages). Importing a package
registers it (``drivers.registry``). Adding a protocol = a new package + one line here."""

PACKAGES = (
    "drivers.modbus",  # modbus_tcp, modbus_rtu, modbus_rtu_tcp
    "drivers.opcua",  # opcua
    "drivers.gauge",  # [[gauges]]
)
