"""``press-collector sink``: the arguments, and running the sink until SIGTERM / SIGINT.

Secrets never on the command line: the broker password comes from ``--password-file`` or
``$PRESS_COLLECTOR_SINK_MQTT_PASSWORD``, the database's from libpq's own ``PGPASSFILE`` /
``~/.pgpass`` or ``$PGPASSWORD`` (``--dsn`` without ``password=``).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import ssl
import sys
import threading
from pathlib import Path

log = logging.getLogger(__name__)

EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="press-collector sink",
        description="Subscribe to the collectors' events and telemetry and store them in "
                    "PostgreSQL, idempotently on (host, press, stream, seq), acknowledging each "
                    "message only after its row is committed (docs/sink.md).")
    p.add_argument("--broker", default="127.0.0.1:1883", help="HOST:PORT of the MQTT broker")
    p.add_argument("--root", required=True, action="append",
                   help="a collector's site.topic_root; repeat for several (sinks side by side "
                        "take disjoint roots, or share one group with --group)")
    p.add_argument("--dsn", default="", help="libpq connection string, e.g. "
                   "'host=db dbname=quality user=sink' (default: the PG* environment)")
    p.add_argument("--group", default="", help="shared subscription group: sinks with the same "
                   "group split the messages between them (MQTT 5 brokers)")
    p.add_argument("--client-id", default="", help="MQTT client id, stable per sink "
                   "(default: press-collector-sink-{hostname}[-{group}])")
    p.add_argument("--protocol", choices=("5", "3.1.1"), default="5",
                   help="MQTT version (3.1.1 for RabbitMQ 3.x / NATS 2.9: no --group)")
    p.add_argument("--batch-max", type=int, default=1000, help="messages per transaction "
                   "(also the MQTT 5 Receive Maximum), 1..65535")
    p.add_argument("--linger-ms", type=float, default=20.0,
                   help="longest wait for more messages before a batch is written")
    p.add_argument("--username", default=None, help="broker account of this sink")
    p.add_argument("--password-file", default=None,
                   help="file with its password (else $PRESS_COLLECTOR_SINK_MQTT_PASSWORD)")
    p.add_argument("--ca-file", default=None, help="TLS to the broker: CA certificates (PEM)")
    p.add_argument("--cert", default=None, help="client certificate (PEM) for mTLS")
    p.add_argument("--cert-key", default=None, help="its private key")
    p.add_argument("--stats-every", type=float, default=30.0, help="seconds between stats lines")
    p.add_argument("--gaps-every", type=float, default=60.0,
                   help="seconds between gap reports from the gaps view (0 = off)")
    p.add_argument("--migrate-only", action="store_true",
                   help="apply the database migrations and exit")
    return p


def main(argv: list[str], log_level: str = "INFO") -> int:
    args = build_parser().parse_args(argv)
    from collector.cli import setup_logging

    setup_logging(log_level)
    try:
        import psycopg
    except ImportError:
        print("press-collector sink needs psycopg 3: pip install 'press-collector[sink]'",
              file=sys.stderr)
        return EXIT_USAGE
    from sink.consumer import Sink, SinkSettings
    from sink.store import migrate

    if args.migrate_only:
        try:
            with psycopg.connect(args.dsn) as conn:
                applied = migrate(conn)
        except psycopg.OperationalError as exc:
            print(f"sink: cannot connect to the database: {str(exc).strip()}", file=sys.stderr)
            return 1
        print(f"applied: {', '.join(applied) or 'nothing (up to date)'}")
        return 0
    host, _, port = args.broker.rpartition(":")
    if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        print(f"--broker: {args.broker!r} is not HOST:PORT", file=sys.stderr)
        return EXIT_USAGE
    if not 1 <= args.batch_max <= 65535:
        print(f"--batch-max: {args.batch_max} is not 1..65535", file=sys.stderr)
        return EXIT_USAGE
    password = None
    if args.password_file:
        try:
            password = Path(args.password_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            print(f"--password-file: cannot read {args.password_file}: {exc.strerror}",
                  file=sys.stderr)
            return EXIT_USAGE
    else:
        password = os.environ.get("PRESS_COLLECTOR_SINK_MQTT_PASSWORD")
    tls = None
    if args.ca_file or args.cert:
        try:
            tls = ssl.create_default_context(cafile=args.ca_file)
            if args.cert:
                tls.load_cert_chain(args.cert, args.cert_key)
        except (OSError, ssl.SSLError) as exc:
            print(f"TLS: {exc}", file=sys.stderr)
            return EXIT_USAGE
    client_id = args.client_id or "-".join(
        x for x in ("press-collector-sink", socket.gethostname(), args.group) if x)
    roots = tuple(r.rstrip("/") for r in args.root)
    settings = SinkSettings(host=host, port=int(port), roots=roots,
                            dsn=args.dsn, client_id=client_id, group=args.group,
                            protocol=args.protocol, batch_max=args.batch_max,
                            linger_ms=args.linger_ms, username=args.username,
                            password=password, tls=tls, stats_every_s=args.stats_every,
                            gaps_every_s=args.gaps_every)
    try:
        sink = Sink(settings)
    except ValueError as exc:
        print(f"press-collector sink: {exc}", file=sys.stderr)
        return EXIT_USAGE
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    sink.run(stop)
    return 0
