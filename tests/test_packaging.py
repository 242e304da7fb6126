"""What goes on a line PC: the press-collector wheel carries the product, no simulator.

The wheel is built the way a release would build it (setuptools, from the tracked files
copied out of the checkout, so nothing untracked or generated slips in) and opened as
the zip it is. The simulators, the local broker and the demo are their own distribution
(``sim/pyproject.toml``); without it ``press-collector demo`` says how to get it.
"""

from __future__ import annotations

import argparse
import io
import shutil
import subprocess
import sys
import zipfile
from contextlib import redirect_stderr
from pathlib import Path

import pytest

from collector.cli import DEMO_MISSING, add_plugin_commands, build_parser

REPO = Path(__file__).resolve().parent.parent


def _tracked_copy(dest: Path) -> Path:
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, check=True,
                           capture_output=True).stdout.decode().split("\0")
    for name in filter(None, files):
        src = REPO / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    tmp = tmp_path_factory.mktemp("wheel")
    src = _tracked_copy(tmp / "src")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                    "--no-build-isolation", "-w", str(tmp / "out"), str(src)],
                   check=True, capture_output=True, timeout=300)
    (built,) = (tmp / "out").glob("press_collector-*.whl")
    return zipfile.ZipFile(built)


def test_wheel_carries_the_product_and_no_simulator(wheel: zipfile.ZipFile) -> None:
    names = wheel.namelist()
    packages = {n.split("/", 1)[0] for n in names if "/" in n and ".dist-info" not in n}
    assert packages == {"collector", "drivers", "buffer", "sink"}
    assert not [n for n in names if n.startswith("sim/") or "/sim_" in n
                or "local_broker" in n or n.endswith("/demo.py")]
    for module in ("drivers/modbus/engine.py", "drivers/opcua/driver.py",
                   "drivers/gauge/families/metro.py", "drivers/registry.py",
                   "collector/schemas/setup.json"):
        assert module in names


def test_wheel_does_not_pull_pymodbus(wheel: zipfile.ZipFile) -> None:
    """The collector's Modbus framing is its own; pymodbus serves only the simulators."""
    (metadata,) = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
    requires = [line for line in wheel.read(metadata).decode().splitlines()
                if line.startswith("Requires-Dist:") and "extra ==" not in line]
    assert requires and not [r for r in requires if "pymodbus" in r]


def test_demo_without_the_simulators_says_how_to_get_them() -> None:
    parser = argparse.ArgumentParser(prog="press-collector")
    parser.add_argument("--log-level", default="INFO")
    add_plugin_commands(parser.add_subparsers(dest="command"), plugins=[])
    args = parser.parse_args(["demo", "--duration", "5"])
    err = io.StringIO()
    with redirect_stderr(err):
        assert args.func(args) == 2
    assert err.getvalue().strip() == DEMO_MISSING
    assert "make demo" in DEMO_MISSING and "pip install -e sim/" in DEMO_MISSING


def test_demo_comes_from_the_simulators_distribution() -> None:
    """Installed by scripts/setup: the entry point is there and is the simulators'."""
    from importlib.metadata import entry_points

    (demo,) = [ep for ep in entry_points(group="press_collector.commands")
               if ep.name == "demo"]
    assert demo.value == "sim.commands:add_command"
    args = build_parser().parse_args(["demo", "--duration", "1"])
    assert args.func.__module__ == "sim.commands"
