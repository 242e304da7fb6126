"""The line-side screen: a web page for the touch screen beside a press (docs/operators.md).

Modules: ``feed`` (the recent events of a press, bounded), ``view`` (the per-press
screen view from the workflow and the feed, pure), ``hub`` (feeds, views, actions as
commands), ``accounts`` (who may act), ``history`` (the feed's start from the buffer),
``server`` (aiohttp; the only module importing it), ``static/`` (HTML, CSS, JS: no
build step).

The daemon calls :func:`prepare` with its other secrets at start (a missing accounts
file or certificate stops it before the buffer is opened, and ``check`` reports the
same), then :func:`start` once its presses exist. Nothing here is imported unless
``[screen] port`` is set.
"""

from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collector.config import LoadedConfig
    from collector.screen.accounts import Account
    from collector.screen.server import ScreenServer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScreenSetup:
    """What the screen needs from files, read once at start."""

    accounts: dict[str, Account] | None
    ssl_context: ssl.SSLContext | None


def prepare(config: LoadedConfig) -> ScreenSetup:
    """Read the accounts file and the TLS certificate; ``StartupError`` names the key."""
    from collector.screen.accounts import AccountsError, load_accounts
    from collector.security import StartupError, resolve_file

    cfg = config.collector.screen
    accounts = None
    if cfg.actions:
        path = resolve_file(cfg.accounts_file, config.config_dir, "screen.accounts_file")
        try:
            accounts = load_accounts(path, str(path))
        except AccountsError as exc:  # one line per problem, each naming the key
            raise StartupError("\n".join(f"collector.toml: screen.accounts_file: {line}"
                                         for line in str(exc).splitlines())) from None
    context = None
    if cfg.tls_cert:
        cert = resolve_file(cfg.tls_cert, config.config_dir, "screen.tls_cert")
        key = resolve_file(cfg.tls_key, config.config_dir, "screen.tls_key")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            context.load_cert_chain(str(cert), str(key))
        except (ssl.SSLError, OSError) as exc:
            raise StartupError(f"collector.toml: screen.tls_cert/tls_key: cannot load the "
                               f"certificate {cert} with key {key} "
                               f"({getattr(exc, 'reason', None) or exc})") from None
    return ScreenSetup(accounts, context)


async def start(daemon: Any, setup: ScreenSetup, history: bool = True
                ) -> ScreenServer | None:
    """Feeds for the daemon's presses (attached at once, before any driver has run),
    their history from the buffer, then the web server."""
    import asyncio

    from collector.screen.history import read_history
    from collector.screen.hub import ScreenHub
    from collector.screen.server import serve

    config = daemon.config
    cfg = config.collector.screen
    hub = ScreenHub(daemon.presses, config.collector.site.topic_root,
                    {pid: [g.id for g in p.gauges] for pid, p in config.presses.items()},
                    actions=tuple(cfg.actions) if setup.accounts else ())
    outbox = daemon.outbox
    if history and outbox is not None and outbox.path is not None:
        hub.hold()
        try:
            upto = {pid: outbox.last_seq(pid, "events") for pid in hub.feeds}
            tails = await asyncio.to_thread(read_history, outbox.path, upto)
            for pid, events in tails.items():
                hub.seed(pid, events)
        except Exception as exc:  # the screen starts without its history, never fails
            log.warning("screen: recent history not read from the buffer (%s); the chart "
                        "starts empty", exc)
        finally:
            hub.resume()
    try:
        return await serve(hub, cfg, setup.accounts, setup.ssl_context)
    except OSError as exc:  # the port taken, the address not ours: collecting goes on
        hub.detach()
        log.error("line-side screen NOT started: cannot listen on %s:%d (%s); the daemon "
                  "runs on without it", cfg.bind, cfg.port, exc.strerror or exc)
        return None


def startup_problems(config: LoadedConfig) -> list[str]:
    """``press-collector check``: what :func:`prepare` would stop the daemon on."""
    from collector.security import StartupError

    if not config.collector.screen.port:
        return []
    try:
        prepare(config)
    except StartupError as exc:
        return str(exc).splitlines()
    return []
