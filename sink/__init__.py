"""The central consumer (reference): collectors' MQTT messages -> PostgreSQL.

``press-collector sink`` (docs/sink.md). A package of its own, beside ``collector``, not
inside it: it runs on a central server, not on a line PC; it imports the contract from
``collector`` (envelope prefix, schema versions) and nothing in the daemon imports it
(``collector/cli.py`` hands the ``sink`` command over without importing this package
until that command runs). It needs the ``sink`` extra (psycopg 3).
"""
