"""Command line: ``press-collector run | check | demo | buffer | export | status ...``.

Each command is a thin shell over a library function the daemon and the tests use too.
Heavy imports (pymodbus, paho, asyncua) happen inside the commands that need them, so
``check`` and ``--help`` start fast on a small line PC.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any, TextIO

DEFAULT_CONFIG_DIR = Path("/etc/press-collector")
# exit codes of `run` that a restart cannot fix (systemd: RestartPreventExitStatus=2 3 4)
EXIT_CONFIG = 2
EXIT_STARTUP = 3  # credentials / certificates missing or unreadable
EXIT_BUFFER = 4  # buffer file corrupt, foreign or too new: refused, never overwritten


def setup_logging(level: str, stream: TextIO = sys.stdout) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=stream,
    )
    for noisy in ("pymodbus", "asyncua"):
        # our drivers log each outage once; pymodbus would log every timeout with a frame dump
        logging.getLogger(noisy).setLevel(logging.CRITICAL)
    from collector.security import unmute_security_warnings

    unmute_security_warnings()  # asyncua's own security warnings stay audible (once each)


def cmd_check(args: argparse.Namespace) -> int:
    from collector.config import check, load_config, summary

    problems = check(args.config_dir)
    warnings: list[str] = []
    if not problems:
        # what `run` would stop on before it opens the buffer (credential files, TLS files),
        # in the words run uses; then what runs but weakens security (warnings)
        from collector.command_gate import command_warnings
        from collector.security import startup_problems, startup_warnings

        config = load_config(args.config_dir)
        problems = startup_problems(config)
        warnings = startup_warnings(config) + list(command_warnings(config))
    for line in warnings:
        print(f"warning: {line}", file=sys.stderr)
    if problems:
        for line in problems:
            print(line, file=sys.stderr)
        print(f"{len(problems)} problem(s) in {args.config_dir}", file=sys.stderr)
        return 1
    print(summary(args.config_dir))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from collector.config import ConfigError, load_config
    from collector.daemon import run_until_signalled

    setup_logging(args.log_level)
    try:
        config = load_config(args.config_dir)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return EXIT_CONFIG
    from buffer.store import BufferFileError
    from collector import loop
    from collector.security import StartupError

    try:
        loop.run(run_until_signalled(config))
    except StartupError as exc:
        print(f"press-collector: cannot start: {exc}", file=sys.stderr)
        return EXIT_STARTUP
    except BufferFileError as exc:
        print(f"press-collector: cannot start: buffer file refused: {exc}. The file is left "
              "untouched: `press-collector buffer check PATH` says more; `buffer salvage` "
              "keeps its readable rows, `buffer reset` starts fresh (both keep the old file).",
              file=sys.stderr)
        return EXIT_BUFFER
    return 0


DEMO_MISSING = (
    "press-collector demo needs the simulators, which the line-PC install does not carry "
    "(they are not in the press-collector wheel). Run the demo from a checkout of the "
    "project: `make demo` (scripts/setup installs the simulators into the project's venv: "
    "pip install -e sim/).")


def cmd_demo_missing(_args: argparse.Namespace) -> int:
    print(DEMO_MISSING, file=sys.stderr)
    return 2


def add_plugin_commands(sub: argparse._SubParsersAction, plugins: Any = None) -> None:
    """Commands other distributions plug in (entry point group ``press_collector.commands``:
    ``add_command(subparsers)``); the simulators' distribution brings ``demo``. Without
    it, ``demo`` says how to get it. The product never imports the simulators itself.
    ``plugins``: the entry points to use (default: the installed ones)."""
    if plugins is None:
        from importlib.metadata import entry_points

        plugins = entry_points(group="press_collector.commands")
    found = {ep.name: ep for ep in plugins}
    for ep in found.values():
        ep.load()(sub)
    if "demo" not in found:
        demo = sub.add_parser("demo", help="run the whole pipeline on simulated presses and "
                              "gauges (needs the simulators: make demo in a checkout)")
        for option in ("--config-dir", "--duration", "--broker", "--workdir"):  # the demo's
            demo.add_argument(option, help=argparse.SUPPRESS)  # accepted, then explained
        demo.set_defaults(func=cmd_demo_missing)


def cmd_buffer_stats(args: argparse.Namespace) -> int:
    from buffer.store import BufferFileError, Outbox

    try:
        outbox = Outbox.open(Path(args.path), readonly=True)
    except (BufferFileError, OSError) as exc:
        print(exc if isinstance(exc, BufferFileError) else f"{args.path}: {exc}", file=sys.stderr)
        return 2
    try:
        print(json.dumps(outbox.stats(), indent=2, default=str))
    finally:
        outbox.close()
    return 0


def cmd_buffer_check(args: argparse.Namespace) -> int:
    """`buffer check PATH`: the start check with no time bound, plus the seq marks."""
    from buffer.tools import check

    result = check(Path(args.path), budget_s=args.budget)
    print("\n".join(result.lines()))
    return 0 if result.verdict == "ok" else 1


def cmd_buffer_reset(args: argparse.Namespace) -> int:
    """`buffer reset PATH`: archive the buffer, start fresh above the seq marks."""
    from buffer.store import BufferFileError
    from buffer.tools import reset

    try:
        archived = reset(Path(args.path))
    except (BufferFileError, OSError) as exc:
        print(f"press-collector: buffer reset: {exc}", file=sys.stderr)
        return 2
    if archived is None:
        print(f"{args.path}: no buffer file; the next start creates one")
    else:
        print(f"{args.path}: archived as {archived}; the next start creates a fresh buffer "
              "whose seqs continue above everything published (seq mark file "
              f"{args.path}-seqmark kept)")
    return 0


def cmd_buffer_salvage(args: argparse.Namespace) -> int:
    """`buffer salvage PATH`: every readable row into a new buffer; the old one kept."""
    from buffer.store import BufferFileError
    from buffer.tools import salvage

    try:
        report = salvage(Path(args.path))
    except (BufferFileError, OSError) as exc:
        print(f"press-collector: buffer salvage: {exc}", file=sys.stderr)
        return 2
    print(f"{args.path}: {report.rows_copied} rows copied into a new buffer "
          f"({report.rows_unreadable} ids in unreadable ranges, {report.retained} retained "
          f"states, {report.kv} snapshots); the damaged file is kept as {report.archived}")
    for note in report.notes:
        print(f"  note: {note}")
    return 0


def cmd_cmd(args: argparse.Namespace) -> int:
    from collector.commands_cli import Identity, send_command

    identity = Identity(username=args.username, password_file=args.password_file,
                        cert_file=args.cert, key_file=args.cert_key)
    return send_command(args.config_dir, args.press, args.name, args.fields,
                        operator=args.operator, timeout=args.timeout, identity=identity,
                        key_file=args.key, role=args.role)


def cmd_keygen(args: argparse.Namespace) -> int:
    from collector.commands_cli import generate_key

    return generate_key(args.out, args.name, args.role)


def cmd_screen_account(args: argparse.Namespace) -> int:
    from collector.screen.accounts import new_account_line

    return new_account_line(args.name, args.operator, args.role, args.presses,
                            args.password_stdin)


def build_parser(plugins: Any = None) -> argparse.ArgumentParser:
    """``plugins``: the entry points of other distributions' commands (default: the
    installed ones; ``()`` for none, as ``run`` does: see ``main``)."""
    parser = argparse.ArgumentParser(
        prog="press-collector", description="Press and gauge data collector for stamping shops")
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING, ERROR")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the daemon")
    run.add_argument("--config-dir", type=Path, default=DEFAULT_CONFIG_DIR)
    run.set_defaults(func=cmd_run)

    check = sub.add_parser("check", help="validate every config file and exit")
    check.add_argument("--config-dir", type=Path, default=DEFAULT_CONFIG_DIR)
    check.set_defaults(func=cmd_check)

    add_plugin_commands(sub, plugins)

    cmd = sub.add_parser("cmd", help="send a command to a press and wait for the reply",
                         description="Publish {root}/{press}/cmd/{role}/{name} and print the "
                                     "reply from {root}/{press}/cmd_result (exit 0: accepted, "
                                     "1: refused, 2: not sent or no reply). Connects with its "
                                     "own broker account, never the collector's. Example: "
                                     "press-collector cmd --username qs-lab --password-file "
                                     "~/.mqtt-pw --operator Q7 p1 release why='sorted'")
    cmd.add_argument("--config-dir", type=Path, default=DEFAULT_CONFIG_DIR)
    cmd.add_argument("--operator", default=None, help="operator id (or operator=... field)")
    cmd.add_argument("--role", choices=("production", "quality"), default=None,
                     help="the role to send as, for a command several roles send "
                          "(confirm_first_article); default: the command's own role")
    cmd.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the reply")
    cmd.add_argument("--username", default=None, help="this terminal's broker account")
    cmd.add_argument("--password-file", default=None,
                     help="file holding its password (else $PRESS_COLLECTOR_CMD_PASSWORD)")
    cmd.add_argument("--cert", default=None, help="client certificate (PEM) for mTLS")
    cmd.add_argument("--cert-key", default=None, help="the client certificate's private key")
    cmd.add_argument("--key", default=None, help="Ed25519 signing key (PEM, from keygen; "
                                                 "else $PRESS_COLLECTOR_CMD_KEY)")
    cmd.add_argument("press", help="press id, e.g. p1")
    cmd.add_argument("name", help="set_material start_setup release hold repeat_measurement "
                                  "start_first_article start_last_piece request_capability "
                                  "missed_check_reason acknowledge_alarm confirm_first_article")
    cmd.add_argument("fields", nargs="*", metavar="key=value", help="command fields")
    cmd.set_defaults(func=cmd_cmd)

    keygen = sub.add_parser("keygen", help="make an Ed25519 key pair for signed commands",
                            description="Write a new private key (PEM, mode 0600) and print "
                                        "the [[workflow.commands.keys]] table for the press "
                                        "configs (docs/security.md, Signed commands)")
    keygen.add_argument("--out", type=Path, required=True, help="private key file to create")
    keygen.add_argument("--name", default="operator terminal", help="who holds the key")
    keygen.add_argument("--role", choices=("production", "quality"), default="quality")
    keygen.set_defaults(func=cmd_keygen)
    account = sub.add_parser(
        "screen-account", help="make a line of the line-side screen's accounts file",
        description="Ask for the password (twice) and print the account's line for "
                    "screen.accounts_file (the password only as a scrypt hash; "
                    "docs/security.md, Line-side screen)")
    account.add_argument("name", help="what is typed at sign-in, e.g. p1-panel")
    account.add_argument("--operator", required=True, help="operator id its commands carry")
    account.add_argument("--role", choices=("production", "quality"), default="production")
    account.add_argument("--presses", default="*", help="press ids, comma-separated, or *")
    account.add_argument("--password-stdin", action="store_true",
                         help="read the password from stdin (one line) instead of asking")
    account.set_defaults(func=cmd_screen_account)
    probe = sub.add_parser("probe", help="commissioning probes: talk to one device, print "
                                         "what it says")
    from collector.probe import add_probe_commands

    probe_sub = probe.add_subparsers(dest="probe_command", required=True)
    add_probe_commands(probe_sub)
    from drivers.opcua import probe as opcua_probe  # light: imports asyncua only when run

    opcua_cert = sub.add_parser("opcua-cert", help="create a self-signed OPC UA client "
                                "certificate if none exists")
    opcua_probe.add_cert_arguments(opcua_cert)
    opcua_cert.set_defaults(func=lambda a: opcua_probe.run_cert(a))

    buffer = sub.add_parser("buffer", help="inspect the SQLite buffer")
    buffer_sub = buffer.add_subparsers(dest="buffer_command", required=True)
    stats = buffer_sub.add_parser("stats", help="rows, backlog, size")
    stats.add_argument("path", help="path of the buffer file")
    stats.set_defaults(func=cmd_buffer_stats)
    bcheck = buffer_sub.add_parser("check", help="check the file for damage (no time bound) "
                                   "and against its seq mark file; exit 1 if not ok")
    bcheck.add_argument("path", help="path of the buffer file")
    bcheck.add_argument("--budget", type=float, default=None,
                        help="stop the whole-file check after this many seconds")
    bcheck.set_defaults(func=cmd_buffer_check)
    breset = buffer_sub.add_parser("reset", help="archive the buffer file and start fresh "
                                   "(seqs continue above everything published)")
    breset.add_argument("path", help="path of the buffer file")
    breset.set_defaults(func=cmd_buffer_reset)
    bsalv = buffer_sub.add_parser("salvage", help="copy every readable row of a damaged "
                                  "buffer into a new one; the old file is kept (archived)")
    bsalv.add_argument("path", help="path of the buffer file")
    bsalv.set_defaults(func=cmd_buffer_salvage)
    from collector.buffer_cli import add_export_parser

    add_export_parser(buffer_sub)
    from collector import exports_cli  # export qdas|csv, status (issue 14)

    exports_cli.add_commands(sub, DEFAULT_CONFIG_DIR)
    # the central consumer (sink/, docs/sink.md): its own package and arguments, imported
    # only when this command runs (nothing of the daemon imports the sink)
    sub.add_parser("sink", add_help=False, help="central consumer: the collectors' events and "
                   "telemetry -> PostgreSQL (press-collector sink --help)")
    return parser


def _command_of(argv: list[str] | None) -> str | None:
    """The subcommand named on the command line, read before the full parser is built."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--log-level")
    pre.add_argument("command", nargs="?")
    known, _rest = pre.parse_known_args(argv)
    return known.command


def main(argv: list[str] | None = None) -> int:
    # The daemon never needs another distribution's commands: looking them up would import
    # each plugin's package (the simulators' on a dev install) into the daemon for its
    # whole life. (importlib.metadata itself comes with pydantic's plugin loader anyway.)
    parser = build_parser(plugins=() if _command_of(argv) == "run" else None)
    args, rest = parser.parse_known_args(argv)
    if args.command == "sink":
        from sink.cli import main as sink_main

        return sink_main(rest, args.log_level)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
