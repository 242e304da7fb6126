"""The line-side screen without a browser: the view built from a real press runtime (its
workflow and a real SQLite buffer), the actions through the command gate, the HTTP
server on a real socket (sign-in, CSRF, Origin, read-only, live updates), languages,
accounts, and the restart that reads the feed back from the buffer.

The browser story (chromium) is tests/test_screen_browser.py."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from buffer.store import Outbox
from collector.config import ScreenConfig, load_config, to_workflow_settings
from collector.messages import Topics
from collector.press import PressRuntime
from collector.press_drivers import role_tags
from collector.screen.accounts import (
    Account,
    AccountsError,
    account_line,
    check_password,
    parse_accounts,
)
from collector.screen.history import read_history
from collector.screen.hub import ActionRefused, ScreenHub
from collector.screen.server import ScreenServer, pick_lang
from drivers.base import GaugeValue, PollResult
from sim.demo import REPO_CONFIG
from sim.ports import free_port

ROOT = "test/press-shop"
ACTIONS = ("acknowledge_alarm", "start_last_piece", "repeat_measurement")
PANEL = Account("p1-panel", "OP1", "production", ("p1",), "")
QA = Account("qa", "Q7", "quality", ("*",), "")


class Press:
    """Press p1 of the example config on a real buffer file, fed as its drivers would."""

    def __init__(self, path: Path) -> None:
        config = load_config(REPO_CONFIG)
        press = config.presses["p1"]
        settings = to_workflow_settings(press.workflow)
        settings.authorized.update(production=("OP1",), quality=("Q7",))
        self.outbox = Outbox.open(path, commit_interval_s=0.002)
        self.runtime = PressRuntime("p1", role_tags(press), settings, config.plans,
                                    self.outbox, Topics(ROOT, "h1"))
        self.ts = 1_800_000_000.0
        self.strokes = 100
        self.die = 7
        self.readings = 0

    def poll(self, strokes: int = 0) -> None:
        self.ts += 1
        self.strokes += strokes
        self.runtime.sink(PollResult("p1/plc", self.ts, {
            "strokes": self.strokes, "die_id": self.die, "part_number": "BRK-100",
            "material_lot": "L1", "setup_mode": False, "running": True, "spm": 60}))

    def measure(self, gauge: str, value: str) -> None:
        self.ts += 1
        self.runtime.sink(GaugeValue(gauge, self.ts, value, "mm"))

    def first_article(self, c3: str = "0.020") -> None:
        for gauge, value in (("g1", "25.010"), ("g2", "12.480"), ("g2", c3)):
            self.measure(gauge, value)


@pytest.fixture
def press(tmp_path: Path):
    p = Press(tmp_path / "buffer.sqlite")
    p.poll()
    yield p
    p.outbox.close()


def hub_for(p: Press, actions: tuple[str, ...] = ACTIONS) -> ScreenHub:
    return ScreenHub({"p1": p.runtime}, ROOT, {"p1": ["g1", "g2"]}, actions=actions,
                     clock=lambda: p.ts)


# -- the view ---------------------------------------------------------------------------

def test_first_article_next_values_and_verdict(press: Press) -> None:
    hub = hub_for(press)
    view = hub.view("p1")
    assert (view["state"], view["mode"]) == ("awaiting_first_article", "first_article")
    assert view["first_article"]["next"] == "C1"
    assert [s["code"] for s in view["next_steps"]] == ["measure_first_article"]
    press.measure("g1", "25.010")
    fa = hub.view("p1")["first_article"]
    assert (fa["next"], fa["measured"], fa["verdict"]) == ("C2", 1, None)
    assert fa["rows"][0]["value"] == "25.010" and fa["rows"][0]["verdict"] == "pass"
    press.measure("g2", "12.480")
    press.measure("g2", "0.080")  # C3 above 0.05
    view = hub.view("p1")
    assert (view["state"], view["mode"]) == ("hold", "first_article")
    assert view["first_article"]["verdict"] == "fail"
    assert view["first_article"]["failed"] == ["C3"]
    assert view["hold"]["cause"] == "first_article_fail"
    assert view["next_steps"][0]["code"] == "first_article_failed"
    press.first_article()  # attempt 2 passes
    view = hub.view("p1")
    assert (view["state"], view["mode"]) == ("released", "production")
    assert view["first_article"]["verdict"] == "pass"  # shown until patrol values come
    assert view["first_article"]["attempt"] == 2
    press.poll(strokes=12)
    view = hub.view("p1")
    assert view["strokes_since_release"] == 12
    assert view["patrol"]["next"]["strokes_left"] == 500 - 12


def test_chart_points_limits_markers_voids_and_alarms(press: Press) -> None:
    hub = hub_for(press)
    press.first_article()
    for value in ("25.001", "25.003", "24.998"):
        press.measure("g1", value)
        press.measure("g2", "12.500")
        press.measure("g2", "0.010")
    c1 = hub.view("p1")["characteristics"][0]
    assert [p["value"] for p in c1["chart"]["points"]] == [25.001, 25.003, 24.998]
    assert c1["last"]["value"] == "24.998" and c1["chart"]["decimals"] == 3
    # repeat_measurement voids the last value: off the chart, the last value before it
    press.measure("g1", "25.090")  # out of tolerance: an alarm
    view = hub.view("p1")
    alarm = view["alarms"][0]
    assert (alarm["cause"], alarm["characteristic"], alarm["acknowledged"]) == (
        "out_of_tolerance", "C1", None)
    assert alarm["ref"].startswith("p1/events/")
    assert hub.act("p1", PANEL, "repeat_measurement", {"reason": "part not seated"})["ok"]
    c1 = hub.view("p1")["characteristics"][0]
    assert len(c1["chart"]["points"]) == 3 and c1["last"]["value"] == "24.998"
    # a die change: new phase, a marker where its points start
    press.die = 8
    press.poll()
    press.first_article()
    press.measure("g1", "25.002")
    chart = hub.view("p1")["characteristics"][0]["chart"]
    assert [m["type"] for m in chart["markers"]] == ["die_change"]
    assert chart["markers"][0]["index"] == 3
    assert [p["phase"] for p in chart["points"]] == [1, 1, 1, 2]


def test_acknowledge_alarm_is_a_command_through_the_gate(press: Press) -> None:
    hub = hub_for(press)
    press.first_article()
    press.measure("g1", "25.090")
    ref = hub.view("p1")["alarms"][0]["ref"]
    with pytest.raises(ActionRefused) as unknown:
        hub.act("p1", PANEL, "acknowledge_alarm", {"alarm": "p1/events/999999"})
    assert unknown.value.status == 404
    reply = hub.act("p1", PANEL, "acknowledge_alarm", {"alarm": ref, "note": "die checked"})
    assert reply["ok"] and reply["request_id"].startswith("screen.p1-panel.")
    alarm = hub.view("p1")["alarms"][0]
    assert alarm["acknowledged"]["operator"] == "OP1"
    assert alarm["acknowledged"]["note"] == "die checked"
    assert hub.view("p1")["last_command"]["command"] == "acknowledge_alarm"
    # the quality account's role is not the command's: the gate refuses the topic
    wrong = hub.act("p1", QA, "acknowledge_alarm", {"alarm": ref})
    assert (wrong["ok"], wrong["code"]) == (False, "wrong_topic")
    # an operator the press's allow-list does not name
    stranger = Account("p1-other", "OP9", "production", ("p1",), "")
    refused = hub.act("p1", stranger, "acknowledge_alarm", {"alarm": ref})
    assert (refused["ok"], refused["code"]) == (False, "unauthorized")
    # text safety: a bidi override in the note is refused by the workflow
    bidi = hub.act("p1", PANEL, "acknowledge_alarm", {"alarm": ref, "note": "ok\u202e"})
    assert (bidi["ok"], bidi["code"]) == (False, "invalid_field")


def test_actions_the_screen_refuses_itself(press: Press) -> None:
    hub = hub_for(press, actions=("start_last_piece",))
    with pytest.raises(ActionRefused) as off:
        hub.act("p1", PANEL, "repeat_measurement", {"reason": "x"})
    assert (off.value.status, off.value.code) == (403, "not_enabled")
    elsewhere = Account("p2-panel", "OP1", "production", ("p2",), "")
    with pytest.raises(ActionRefused) as other:
        hub.act("p1", elsewhere, "start_last_piece", {})
    assert other.value.code == "unauthorized"
    with pytest.raises(ActionRefused) as extra:
        hub.act("p1", PANEL, "start_last_piece", {"operator": "Q7"})
    assert extra.value.code == "invalid_field"  # the operator comes from the account


def test_rate_limit_of_the_press_applies_to_the_screen(press: Press) -> None:
    hub = hub_for(press)
    press.first_article()
    replies = [hub.act("p1", PANEL, "start_last_piece", {}) for _ in range(30)]
    assert sum(r["ok"] for r in replies) <= 20  # the gate's burst
    assert any(r["code"] == "rate_limited" for r in replies)


def test_containment_and_confirmations_shown_when_the_workflow_has_them(press: Press) -> None:
    hub = hub_for(press)
    view = hub.view("p1")
    assert view["containment"] is None and view["confirmations"] is None
    wf: Any = press.runtime.workflow
    context = wf.context  # the workflow's contract: both keys present while open
    wf.context = lambda: {**context(),
                          "containment": {"characteristic": "C1", "first_stroke": 1200,
                                          "last_stroke": 1450, "parts": 250},
                          "confirmations": {"required": ["production", "quality"],
                                            "confirmed": {}}}
    view = hub.view("p1")
    assert view["containment"]["parts"] == 250
    assert view["confirmations"]["required"] == ["production", "quality"]
    codes = [s["code"] for s in view["next_steps"]]
    assert "containment" in codes and "confirmations" in codes


def test_the_feed_survives_a_restart_from_the_buffer(press: Press, tmp_path: Path) -> None:
    hub = hub_for(press)
    press.first_article()
    for value in ("25.001", "25.090"):
        press.measure("g1", value)
    before = hub.view("p1")
    asyncio.run(press.outbox.flush())
    upto = {"p1": press.outbox.last_seq("p1", "events")}
    fresh = hub_for(press)
    fresh.feeds["p1"].__init__("p1")  # an empty feed, as after a restart
    for pid, events in read_history(press.outbox.path, upto).items():
        fresh.seed(pid, events)
    after = fresh.view("p1")
    for key in ("alarms", "characteristics", "strokes_since_release", "first_article"):
        assert after[key] == before[key], key


def test_a_reloaded_press_keeps_its_feed_and_a_removed_one_leaves(press: Press) -> None:
    """SIGHUP (collector/reload.py): a restarted press's new runtime feeds the same feed;
    the old runtime no longer does; a removed press is no longer shown."""
    hub = hub_for(press)
    press.first_article()
    old = press.runtime
    config = load_config(REPO_CONFIG)
    p1 = config.presses["p1"]
    fresh = PressRuntime("p1", role_tags(p1), to_workflow_settings(p1.workflow), config.plans,
                         press.outbox, Topics(ROOT, "h1"))  # resumed from the snapshot
    hub.set_press("p1", fresh, ["g1"])
    assert hub.runtimes["p1"] is fresh and not old.observers and len(fresh.observers) == 1
    assert hub.view("p1")["state"] == "released"  # the snapshot, the same feed
    press.runtime = fresh
    press.measure("g1", "25.003")
    c1 = hub.view("p1")["characteristics"][0]
    assert [p["value"] for p in c1["chart"]["points"]] == [25.003]
    hub.drop_press("p1")
    assert "p1" not in hub.runtimes and hub.overview() == [] and not fresh.observers


# -- language, accounts -----------------------------------------------------------------

@pytest.mark.parametrize(("query", "accept", "expected"), [
    ("zh", "en-GB,en;q=0.9", "zh"), ("en", "zh-CN", "en"), (None, "zh-CN,zh;q=0.9", "zh"),
    (None, "de-DE,de;q=0.9,en;q=0.5", "en"), (None, "fr", "zh"), ("xx", None, "zh"),
    (None, "en;q=0.2, zh-Hans;q=0.8", "zh"), (None, "zh;q=0", "zh")])
def test_language_choice(query: str | None, accept: str | None, expected: str) -> None:
    assert pick_lang(query, accept, "zh") == expected


def test_accounts_file_lines() -> None:
    line = account_line("p1-panel", "OP1", "production", ["p1"], "pw-123")
    accounts = parse_accounts(line + "\n# comment\n", "accounts")
    account = accounts["p1-panel"]
    assert (account.operator, account.role, account.presses) == ("OP1", "production", ("p1",))
    assert check_password("pw-123", account.password_hash)
    assert not check_password("pw-124", account.password_hash)
    assert "pw-123" not in line
    with pytest.raises(AccountsError) as bad:
        parse_accounts("a:OP1:boss:*:scrypt$1$1$1$00$00\nb:OP2:quality:*:plain\n", "f")
    assert str(bad.value).splitlines() == [
        "f:1: role 'boss' is not allowed (allowed: production, quality)",
        "f:2: the password hash must be a scrypt$... hash (press-collector screen-account "
        "makes it; never a password in clear)"]
    with pytest.raises(AccountsError):
        account_line("bad name", "OP1", "production", ["p1"], "x")


def test_the_daemon_does_not_import_aiohttp_without_a_screen() -> None:
    code = "import sys, collector.daemon, collector.cli; print('aiohttp' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


# -- the HTTP server on a real socket ---------------------------------------------------

@pytest.fixture
async def served(press: Press) -> AsyncIterator[tuple[Press, str]]:
    accounts = parse_accounts(account_line("p1-panel", "OP1", "production", ["p1"],
                                           "panel-pw") + "\n", "accounts")
    cfg = ScreenConfig(port=free_port(), actions=list(ACTIONS), accounts_file="x")
    server = ScreenServer(hub_for(press), cfg, accounts)
    await server.start()
    try:
        yield press, f"http://127.0.0.1:{server.port}"
    finally:
        await server.close()


async def test_read_only_page_headers_and_language(press: Press) -> None:
    cfg = ScreenConfig(port=free_port())
    server = ScreenServer(hub_for(press), cfg)
    await server.start()
    base = f"http://127.0.0.1:{server.port}"
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(base + "/", allow_redirects=False) as r:
                assert r.status == 302 and r.headers["Location"] == "/press/p1"
            async with http.get(base + "/press/p1",
                                headers={"Accept-Language": "zh-CN,zh;q=0.9"}) as r:
                page = await r.text()
                assert r.status == 200 and '<html lang="zh-CN">' in page
                assert "script-src 'self'" in r.headers["Content-Security-Policy"]
                assert r.headers["X-Frame-Options"] == "DENY"
                assert 'data-actions=""' in page
            async with http.get(base + "/press/p1?lang=en",
                                headers={"Accept-Language": "zh-CN"}) as r:
                assert '<html lang="en">' in await r.text()
            async with http.get(base + "/press/p9") as r:
                assert r.status == 404
            async with http.get(base + "/static/../screen/hub.py") as r:
                assert r.status in (403, 404)
            async with http.post(base + "/api/login",
                                 json={"account": "x", "password": "y"}) as r:
                assert r.status == 404  # read-only: no sign-in at all
            async with http.post(base + "/api/press/p1/action/start_last_piece",
                                 json={"fields": {}}) as r:
                assert r.status == 404
    finally:
        await server.close()


async def test_sign_in_csrf_origin_and_an_action(served: tuple[Press, str]) -> None:
    press, base = served
    press.first_article()
    # a browser keeps the cookie of 127.0.0.1; aiohttp's jar does so only when told
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        async with http.post(base + "/api/login",
                             json={"account": "p1-panel", "password": "wrong"}) as r:
            assert r.status == 401
        async with http.post(base + "/api/press/p1/action/start_last_piece",
                             json={"fields": {}}) as r:
            assert r.status == 401 and (await r.json())["code"] == "signed_out"
        async with http.post(base + "/api/login",
                             json={"account": "p1-panel", "password": "panel-pw"}) as r:
            assert r.status == 200
            session = await r.json()
            cookie = r.headers["Set-Cookie"]
            assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
        assert session["operator"] == "OP1" and session["csrf"]
        url = base + "/api/press/p1/action/start_last_piece"
        async with http.post(url, json={"fields": {}}) as r:
            assert r.status == 403 and (await r.json())["code"] == "csrf"
        headers = {"X-CSRF-Token": session["csrf"]}
        async with http.post(url, json={"fields": {}},
                             headers={**headers, "Origin": "http://evil.example"}) as r:
            assert r.status == 403
        async with http.post(url, json={"fields": {"why": "end of batch"}},
                             headers={**headers, "Origin": base}) as r:
            reply = await r.json()
            assert r.status == 200 and reply["ok"], reply
        assert press.runtime.workflow.last_piece.open is not None
        async with http.post(base + "/api/logout", json={}, headers=headers) as r:
            assert r.status == 200
        async with http.post(url, json={"fields": {}}, headers=headers) as r:
            assert r.status == 401


async def test_failed_sign_ins_are_throttled(served: tuple[Press, str]) -> None:
    _, base = served
    async with aiohttp.ClientSession() as http:
        statuses = []
        for _ in range(6):
            async with http.post(base + "/api/login",
                                 json={"account": "p1-panel", "password": "guess"}) as r:
                statuses.append(r.status)
        assert statuses == [401] * 5 + [429]
        async with http.post(base + "/api/login",  # even the right password waits now
                             json={"account": "p1-panel", "password": "panel-pw"}) as r:
            assert r.status == 429


async def test_live_updates_arrive_as_server_sent_events(served: tuple[Press, str]) -> None:
    press, base = served
    async with aiohttp.ClientSession() as http, http.get(base + "/api/press/p1/events") as r:
        assert r.headers["Content-Type"] == "text/event-stream"
        first = await next_view(r)
        assert first["state"] == "awaiting_first_article"
        press.measure("g1", "25.010")
        second = await next_view(r)
        assert second["first_article"]["rows"][0]["value"] == "25.010"


async def next_view(response: aiohttp.ClientResponse) -> dict[str, Any]:
    """The next ``view`` event of a server-sent event stream."""
    event = None
    async with asyncio.timeout(10):
        while True:
            line = (await response.content.readline()).decode().rstrip("\n")
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and event == "view":
                return orjson.loads(line[6:])


def test_acknowledge_alarm_command_checks_the_reference(press: Press) -> None:
    """Over MQTT too (any terminal): the reference must be one of this press's events."""
    wf = press.runtime.workflow
    for ref in ("p2/events/5", "p1/events/", "p1/events/5x", "p1/events/٣"):
        result = wf.on_command(press.ts, "acknowledge_alarm",
                               {"request_id": "r1", "operator": "OP1", "alarm": ref})
        assert (result.ok, result.code) == (False, "invalid_field"), ref
    result = wf.on_command(press.ts, "acknowledge_alarm",
                           {"request_id": "r2", "operator": "OP1", "alarm": "p1/events/5"})
    assert result.ok and result.effect == {"alarm": "p1/events/5", "note": None}
    assert [e.kind for e in result.events] == ["command"]


def test_screen_account_command_prints_a_hashed_line() -> None:
    out = subprocess.run([sys.executable, "-m", "collector.cli", "screen-account", "p1-panel",
                          "--operator", "OP1", "--presses", "p1,p2", "--password-stdin"],
                         input="panel pw\n", capture_output=True, text=True, check=True)
    account = parse_accounts(out.stdout, "out")["p1-panel"]
    assert account.presses == ("p1", "p2") and check_password("panel pw",
                                                              account.password_hash)
    assert "panel pw" not in out.stdout
    bad = subprocess.run([sys.executable, "-m", "collector.cli", "screen-account", "a:b",
                          "--operator", "OP1", "--password-stdin"], input="x\n",
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "account name 'a:b'" in bad.stderr


def test_every_workflow_state_has_a_label_in_both_languages_and_a_colour() -> None:
    """A state added to the transition table (e.g. awaiting_confirmation for the joint
    sign-off) must show on the screen with its own words and colour, never a raw code."""
    from collector.domain import STATES

    static = Path(__file__).resolve().parent.parent / "collector" / "screen" / "static"
    texts = (static / "i18n.js").read_text(encoding="utf-8")
    css = (static / "screen.css").read_text(encoding="utf-8")
    for state in STATES:
        assert texts.count(f'"state.{state}":') == 2, state  # en and zh
        assert f"body.state-{state} #head" in css, state
        # a tile is offline-coloured unless its state has a rule of its own
        assert state == "offline" or f".tile.{state} " in css, state
