"""What a line PC's daemon pays at start: libraries that only some configs need are
imported when used, not by `press-collector run` itself (RSS at line load is an issue 13
target; cryptography alone is ~9 MB). A fresh interpreter per check: imports are global."""

from __future__ import annotations

import subprocess
import sys

import pytest

# library -> the config that needs it (and the module that imports it then)
ON_DEMAND = {
    "cryptography": "signed commands (collector/signing.py)",
    "asyncua": "an OPC UA press (drivers/opcua/)",
    "aiohttp": "the line-side screen ([screen])",
    "google.protobuf": "Sparkplug B ([sparkplug])",
    "psycopg": "the central consumer (press-collector sink)",
    "serial": "a gauge or an RTU line (drivers/gauge/, drivers/modbus/)",
}


def imported_after(code: str) -> set[str]:
    probe = (f"import sys\n{code}\n"
             f"print(' '.join(m for m in {sorted(ON_DEMAND)!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    return set(out.split())


@pytest.mark.parametrize("code", [
    "import collector.cli, collector.daemon",
    "from collector.config import load_config; load_config('config')",
    # the start-up checks read certificates only where a config names some
    "from collector.config import load_config\nfrom collector.security import startup_warnings\n"
    "startup_warnings(load_config('config'))",
])
def test_the_daemon_does_not_import_what_only_some_configs_need(code: str) -> None:
    assert imported_after(code) == set(), ON_DEMAND


def test_a_press_with_command_keys_loads_cryptography_then() -> None:
    code = ("from collector import signing\n"
            "signing.load_public_key('A' * 43 + '=')")
    assert "cryptography" in imported_after(code)


def test_run_does_not_look_up_other_distributions_commands() -> None:
    """`run` builds its parser without the entry points: another distribution's command
    package (the simulators' on a dev install) would stay in the daemon for its whole
    life. (email and zipfile come with pydantic in the real daemon; not with the CLI.)"""
    probe = ("import sys\nimport collector.cli as cli\n"
             "cli.cmd_run = lambda args: 0\n"
             "cli.main(['--log-level', 'WARNING', 'run', '--config-dir', 'config'])\n"
             "print(sorted(m for m in ('email', 'sim', 'sim.commands', 'zipfile') "
             "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize(("argv", "command"), [
    (["run"], "run"), (["--log-level", "DEBUG", "run", "--config-dir", "c"], "run"),
    (["--log-level=DEBUG", "check"], "check"), (["demo", "--config-dir", "run"], "demo"),
    (["--help"], None), ([], None),
])
def test_the_command_is_read_before_the_parser_is_built(argv: list[str],
                                                        command: str | None) -> None:
    from collector.cli import _command_of

    assert _command_of(argv) == command
