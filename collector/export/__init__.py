"""Exports the quality department loads: Q-DAS AQDEF (``.dfq``) and CSV.

Both read the local SQLite buffer (``buffer.event_reader``), turn the quality events into
one row per measured value (:mod:`collector.export.measurements`) and write them
(:mod:`collector.export.qdas`, :mod:`collector.export.csv_out`). docs/quality.md,
"Exports", documents the formats and the event catalogue.
"""
