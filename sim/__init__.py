"""Simulators, the private broker and the demo: everything that plays the plant.

Used by the tests, the bench and ``press-collector demo``; never shipped to a line PC
(its own distribution, ``sim/pyproject.toml``). Imports flow ``sim -> collector ->
drivers, buffer``; nothing in the product imports ``sim`` (docs/DESIGN.md, "Layering").
"""
