"""The screen's web server (aiohttp, on the daemon's event loop). The only module of the
daemon that imports aiohttp, and only when ``[screen]`` is configured.

Pages: ``/`` (every press of this line PC, live), ``/press/<id>`` (one press: what the
touch screen beside it shows), both plain HTML/CSS/JS from ``static/`` (no build step).
Live updates: server-sent events (``/api/press/<id>/events``, ``/api/events``): the
view is sent when it changed (an event of the press, or at most once a second for the
stroke count), and a small ``tick`` every few seconds that keeps the page's clock and
tells it the line PC is still there. No page reloads; a dropped connection is
reconnected by the browser (EventSource) and the page shows "connection lost" meanwhile.

Read-only unless ``screen.actions`` lists actions: then ``/api/login`` opens a session
(cookie: HttpOnly, SameSite=Strict, Secure under TLS; a CSRF token in a header on every
POST; the Origin checked) and ``/api/press/<id>/action/<name>`` runs the action as a
command (``hub.ScreenHub.act``). Threat model: docs/security.md, "Line-side screen".
"""

from __future__ import annotations

import asyncio
import html
import logging
import re
import ssl
import time
from importlib import resources
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from collector.screen.accounts import MAX_PASSWORD, NAME, Sessions, check_password
from collector.screen.hub import ActionRefused, ScreenHub

if TYPE_CHECKING:
    from collector.config import ScreenConfig
    from collector.screen.accounts import Account

log = logging.getLogger(__name__)

COOKIE = "pc_screen"
LANGS = ("en", "zh")
MAX_STREAMS = 64  # open live connections at once (each is one small task)
SEND_EVERY_S = 1.0  # at most one view per second per connection without an event
TICK_EVERY_S = 5.0
MAX_BODY = 16 * 1024
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; "
                               "img-src 'self' data:; connect-src 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


def pick_lang(query: str | None, accept: str | None, default: str) -> str:
    """``?lang=`` first, then the browser's languages by preference, then the config."""
    if query:
        code = _lang_code(query)
        if code:
            return code
    ranked: list[tuple[float, int, str]] = []
    for i, part in enumerate((accept or "").split(",")[:20]):
        tag, _, params = part.strip().partition(";")
        q = 1.0
        match = re.search(r"q=([0-9.]+)", params)
        if match:
            try:
                q = float(match[1])
            except ValueError:
                q = 0.0
        code = _lang_code(tag)
        if code and q > 0:
            ranked.append((-q, i, code))
    return sorted(ranked)[0][2] if ranked else default


def _lang_code(tag: str) -> str | None:
    tag = tag.strip().lower()
    if tag == "en" or tag.startswith("en-"):
        return "en"
    if tag == "zh" or tag.startswith("zh-") or tag.startswith("zh_"):
        return "zh"
    return None


class ScreenServer:
    """The running server; ``close()`` ends the live streams and stops listening."""

    def __init__(self, hub: ScreenHub, cfg: ScreenConfig,
                 accounts: dict[str, Account] | None = None,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.hub = hub
        self.cfg = cfg
        self.ssl_context = ssl_context
        self.sessions = Sessions(accounts or {}, cfg.session_idle_min * 60.0)
        self.actions = tuple(cfg.actions) if accounts else ()
        self._login_lock = asyncio.Lock()  # one password check at a time (scrypt: CPU)
        self._closing = asyncio.Event()
        self._streams = 0
        self.runner: web.AppRunner | None = None
        self.port: int | None = None
        static = resources.files("collector.screen") / "static"
        self._page = (static / "screen.html").read_text(encoding="utf-8")
        self._static_dir = str(static)
        self.app = self._build()

    # -- lifecycle ----------------------------------------------------------------------
    def _build(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY, middlewares=[self._headers])
        r = app.router
        r.add_get("/", self.page)
        r.add_get("/press/{press}", self.page)
        r.add_static("/static/", self._static_dir, follow_symlinks=False,
                     append_version=False)
        r.add_get("/api/presses", self.api_overview)
        r.add_get("/api/events", self.stream_overview)
        r.add_get("/api/press/{press}", self.api_view)
        r.add_get("/api/press/{press}/events", self.stream_press)
        r.add_get("/api/session", self.api_session)
        r.add_post("/api/login", self.api_login)
        r.add_post("/api/logout", self.api_logout)
        r.add_post("/api/press/{press}/action/{name}", self.api_action)
        return app

    async def start(self) -> None:
        self.runner = web.AppRunner(self.app, access_log=None, handle_signals=False,
                                    shutdown_timeout=2.0)
        await self.runner.setup()
        site = web.TCPSite(self.runner, self.cfg.bind, self.cfg.port,
                           ssl_context=self.ssl_context)
        await site.start()
        server = getattr(site, "_server", None)
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else self.cfg.port
        scheme = "https" if self.ssl_context is not None else "http"
        log.info("line-side screen on %s://%s:%d/ (%s)", scheme, self.cfg.bind, self.port,
                 f"actions: {', '.join(self.actions)}" if self.actions else "read-only")

    async def close(self) -> None:
        self._closing.set()
        self.hub.detach()
        self.hub.wake()
        if self.runner is not None:
            await self.runner.cleanup()

    # -- middleware ---------------------------------------------------------------------
    @web.middleware
    async def _headers(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """Security and cache headers on every answer (errors included)."""
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            self._add_headers(request, exc)
            raise
        if not response.prepared:
            self._add_headers(request, response)
        return response

    @staticmethod
    def _add_headers(request: web.Request, response: web.StreamResponse) -> None:
        for key, value in SECURITY_HEADERS.items():
            response.headers.setdefault(key, value)
        static = request.path.startswith("/static/")
        response.headers.setdefault("Cache-Control", "no-cache" if static else "no-store")

    # -- pages --------------------------------------------------------------------------
    async def page(self, request: web.Request) -> web.Response:
        press = request.match_info.get("press", "")
        if press and press not in self.hub.runtimes:
            raise web.HTTPNotFound(text=f"no press {press[:64]!r} on this line PC\n")
        if not press and len(self.hub.runtimes) == 1:
            only = next(iter(self.hub.runtimes))
            target = f"/press/{only}"
            if request.query_string:
                target += "?" + request.query_string
            raise web.HTTPFound(target)
        lang = pick_lang(request.query.get("lang"), request.headers.get("Accept-Language"),
                         self.cfg.lang)
        body = (self._page.replace("{{LANG}}", "zh-CN" if lang == "zh" else "en")
                .replace("{{UI_LANG}}", lang)
                .replace("{{PRESS}}", html.escape(press, quote=True))
                .replace("{{ACTIONS}}", html.escape(",".join(self.actions), quote=True)))
        return web.Response(text=body, content_type="text/html", charset="utf-8")

    # -- read side ----------------------------------------------------------------------
    def _press(self, request: web.Request) -> str:
        press = request.match_info["press"]
        if press not in self.hub.runtimes:
            raise web.HTTPNotFound(text=f"no press {press[:64]!r}\n")
        return press

    async def api_view(self, request: web.Request) -> web.Response:
        return _json(self.hub.view(self._press(request)))

    async def api_overview(self, request: web.Request) -> web.Response:
        return _json({"presses": self.hub.overview(), "now": time.time()})

    async def stream_press(self, request: web.Request) -> web.StreamResponse:
        press = self._press(request)
        return await self._stream(request, lambda: self.hub.view(press))

    async def stream_overview(self, request: web.Request) -> web.StreamResponse:
        return await self._stream(request, lambda: {"presses": self.hub.overview(),
                                                    "now": time.time()})

    async def _stream(self, request: web.Request, build: Any) -> web.StreamResponse:
        """Server-sent events: ``view`` when it changed, ``tick`` now and then."""
        if self._streams >= MAX_STREAMS:
            raise web.HTTPServiceUnavailable(text="too many screens connected\n")
        self._streams += 1
        response = web.StreamResponse(headers={
            "Content-Type": "text/event-stream", "Cache-Control": "no-store",
            "X-Accel-Buffering": "no"})
        try:
            await response.prepare(request)
            await response.write(b"retry: 2000\n\n")
            last = b""
            last_sent = 0.0
            while not self._closing.is_set():
                view = build()
                now = time.time()
                now_value = view.pop("now", now)
                body = orjson.dumps(view)
                if body != last:
                    view["now"] = now_value
                    await response.write(b"event: view\ndata: " + orjson.dumps(view) + b"\n\n")
                    last, last_sent = body, now
                elif now - last_sent >= TICK_EVERY_S:
                    await response.write(b"event: tick\ndata: " + orjson.dumps(
                        {"now": now}) + b"\n\n")
                    last_sent = now
                await self.hub.changed(SEND_EVERY_S)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._streams -= 1
        return response

    # -- sessions -----------------------------------------------------------------------
    def _session(self, request: web.Request, touch: bool = False):  # -> Session | None
        return self.sessions.get(request.cookies.get(COOKIE), time.time(), touch)

    async def api_session(self, request: web.Request) -> web.Response:
        session = self._session(request)
        return _json(self._session_body(session))

    def _session_body(self, session: Any) -> dict[str, Any]:
        if session is None:
            return {"signed_in": False, "actions": list(self.actions)}
        a = session.account
        return {"signed_in": True, "account": a.name, "operator": a.operator,
                "role": a.role, "presses": list(a.presses), "csrf": session.csrf,
                "actions": list(self.actions),
                "idle_s": self.sessions.idle_s}

    def _check_origin(self, request: web.Request) -> None:
        origin = request.headers.get("Origin")
        if origin is None:
            return  # not a browser's cross-site request (SameSite + CSRF token still hold)
        expected = f"{'https' if self.ssl_context else 'http'}://{request.host}"
        if origin != expected:
            raise web.HTTPForbidden(text="cross-origin request refused\n")

    async def _body(self, request: web.Request) -> dict[str, Any]:
        if request.content_type != "application/json":
            raise web.HTTPUnsupportedMediaType(text="send application/json\n")
        try:
            data = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            raise web.HTTPBadRequest(text="not JSON\n") from None
        if not isinstance(data, dict):
            raise web.HTTPBadRequest(text="a JSON object is expected\n")
        return data

    async def api_login(self, request: web.Request) -> web.Response:
        if not self.actions:
            raise web.HTTPNotFound(text="this screen is read-only\n")
        self._check_origin(request)
        data = await self._body(request)
        name, password = data.get("account"), data.get("password")
        if not isinstance(name, str) or not isinstance(password, str) \
                or not NAME.fullmatch(name) or not password or len(password) > MAX_PASSWORD:
            return _json({"ok": False, "code": "bad_login",
                          "message": "account or password wrong"}, 401)
        now = time.time()
        if self.sessions.throttled(name, now):
            log.warning("screen: sign-in for %r refused: too many failed attempts", name)
            return _json({"ok": False, "code": "throttled",
                          "message": "too many failed sign-ins; wait a few minutes"}, 429)
        account = self.sessions.accounts.get(name)
        async with self._login_lock:
            stored = account.password_hash if account is not None else _DUMMY_HASH
            ok = await asyncio.to_thread(check_password, password, stored)
        if account is None or not ok:
            self.sessions.failed(name, time.time())
            log.warning("screen: failed sign-in for %r from %s", name, request.remote)
            return _json({"ok": False, "code": "bad_login",
                          "message": "account or password wrong"}, 401)
        session = self.sessions.open(account, time.time())
        log.info("screen: %s (operator %s, %s) signed in from %s", account.name,
                 account.operator, account.role, request.remote)
        response = _json({"ok": True, **self._session_body(session)})
        response.set_cookie(COOKIE, session.token, httponly=True, samesite="Strict",
                            secure=self.ssl_context is not None, path="/")
        return response

    async def api_logout(self, request: web.Request) -> web.Response:
        self._check_origin(request)
        session = self._session(request)
        if session is not None and request.headers.get("X-CSRF-Token") == session.csrf:
            self.sessions.close(session.token)
        response = _json({"ok": True, "signed_in": False})
        response.del_cookie(COOKIE, path="/")
        return response

    async def api_action(self, request: web.Request) -> web.Response:
        press = self._press(request)
        name = request.match_info["name"]
        if not self.actions:
            raise web.HTTPNotFound(text="this screen is read-only\n")
        self._check_origin(request)
        session = self._session(request, touch=True)
        if session is None:
            return _json({"ok": False, "code": "signed_out",
                          "message": "sign in first (or again: the session ended)"}, 401)
        if request.headers.get("X-CSRF-Token") != session.csrf:
            return _json({"ok": False, "code": "csrf", "message": "stale page: reload"}, 403)
        data = await self._body(request)
        fields = data.get("fields", {})
        if not isinstance(fields, dict) or not all(
                isinstance(k, str) and isinstance(v, str | type(None))
                for k, v in fields.items()):
            return _json({"ok": False, "code": "invalid_field",
                          "message": "fields must be strings"}, 400)
        try:
            reply = self.hub.act(press, session.account, name, fields)
        except ActionRefused as exc:
            return _json({"ok": False, "code": exc.code, "message": exc.message}, exc.status)
        log.info("screen: %s (operator %s) %s on %s: %s", session.account.name,
                 session.account.operator, name, press,
                 "ok" if reply["ok"] else f"refused {reply['code']}")
        return _json(reply, 200 if reply["ok"] else 409)


# a hash that never matches: unknown accounts cost the same time as known ones
_DUMMY_HASH = ("scrypt$16384$8$1$00000000000000000000000000000000$"
               "0000000000000000000000000000000000000000000000000000000000000000")


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status,
                        content_type="application/json")


async def serve(hub: ScreenHub, cfg: ScreenConfig, accounts: dict[str, Account] | None,
                ssl_context: ssl.SSLContext | None = None) -> ScreenServer:
    server = ScreenServer(hub, cfg, accounts, ssl_context)
    await server.start()
    return server
