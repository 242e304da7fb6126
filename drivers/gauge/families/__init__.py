"""One module per gauge family: its Preset (line settings, errors, poll), its record
parser and its record formatter. ``drivers/gauge/presets.py`` lists them."""
