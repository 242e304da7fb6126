"""Write a real config directory for a daemon subprocess, from the repo's examples.

The example files are copied as they are, with only the addresses changed (broker port,
PLC ports, gauge paths), so the daemon under test reads the same TOML a plant would.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from sim.demo import REPO_CONFIG


def write_config_dir(dest: Path, broker_port: int, plc_ports: dict[str, int],
                     gauge_dir: Path) -> Path:
    """Copy config/ to ``dest`` keeping only the presses in ``plc_ports``."""
    shutil.copytree(REPO_CONFIG, dest)
    collector = dest / "collector.toml"
    text = collector.read_text()
    text = re.sub(r"(?m)^port = 1883", f"port = {broker_port}", text)
    collector.write_text(text)
    for press_file in (dest / "presses").glob("*.toml"):
        press = press_file.stem
        if press not in plc_ports:
            press_file.unlink()
            continue
        text = press_file.read_text()
        text = re.sub(r"(?m)^port = 50\d\d", f"port = {plc_ports[press]}", text)
        text = text.replace("/tmp/press-collector-demo", str(gauge_dir))
        press_file.write_text(text)
    return dest
