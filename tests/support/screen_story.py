"""The line-side screen's story on the simulators, step by step in a real browser: used
by tests/test_screen_browser.py (which checks the page at each step) and by
scripts/screenshots (which photographs it for docs/screen/).

Press p1 of the example config (BRK-100) with: patrol every 10 strokes, fixed control
limits on C1 (25.00 ± 3 x 0.01), a broken rule on C1 holds the press, an out-of-tolerance
C2 starts 100 % inspection; commands: production OP1, quality Q7; the screen on a free
port with all three actions and one account ``p1-panel`` (operator OP1, production).

Steps (each yields its name once the page shows it):
``awaiting`` -> ``first_article`` (one value in) -> ``first_article_fail`` (C3 burr
too high: FAIL, hold) -> ``first_article_pass`` (attempt 2) -> ``patrol_due`` ->
``hold`` (C1 beyond its upper control limit: rule 1, the reaction holds) ->
``acknowledged`` (signed in, alarm acknowledged on the screen) -> ``released`` (quality
release over MQTT) -> ``production`` (a die change, a new first article, values of the
new phase: the chart shows the marker) -> ``inspection_100`` (C2 out of tolerance) ->
``zh`` (the same page in Simplified Chinese).
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson

from collector.config import LoadedConfig
from collector.domain import Reaction, SpcOptions
from collector.screen.accounts import account_line
from sim.ports import free_port
from tests.support.browser import Browser
from tests.support.commands import command_topic, stamped
from tests.support.line import BRK100_PASS, Line, wait_gauges_online

ACCOUNT, PASSWORD = "p1-panel", "line-1-panel-pw"
FAIL_FIRST_ARTICLE = [("g1", "25.010"), ("g2", "12.480"), ("g2", "0.080")]  # C3 > 0.05


def screen_config(port: int, accounts_file: Path):
    """The config change of the story (see the module doc)."""
    def adjust(config: LoadedConfig) -> LoadedConfig:
        plan = config.plans["BRK-100"]
        c1 = dataclasses.replace(plan.characteristics[0], spc=SpcOptions(
            limits="fixed", center=Decimal("25.00"), sigma=Decimal("0.01")))
        plan = dataclasses.replace(
            plan, characteristics=(c1, *plan.characteristics[1:]), patrol_every_strokes=10,
            overdue_grace_min=10.0,
            reactions={"critical": Reaction(rule=("hold",)),
                       "significant": Reaction(out_of_tolerance=("inspection_100",))})
        press = config.presses["p1"]
        commands = press.workflow.commands.model_copy(update={"production": ["OP1"],
                                                              "quality": ["Q7"]})
        workflow = press.workflow.model_copy(update={"commands": commands})
        col = config.collector
        screen = col.screen.model_copy(update={
            "port": port, "actions": ["acknowledge_alarm", "start_last_piece",
                                      "repeat_measurement"],
            "accounts_file": str(accounts_file)})
        return config.model_copy(update={
            "plans": {**config.plans, "BRK-100": plan},
            "presses": {**config.presses, "p1": press.model_copy(
                update={"workflow": workflow})},
            "collector": col.model_copy(update={"screen": screen})})

    return adjust


def write_accounts(path: Path) -> None:
    path.write_text("# the screen story's account\n" + account_line(
        ACCOUNT, "OP1", "production", ["p1"], PASSWORD) + "\n")
    path.chmod(0o600)


async def start_line(tmp_path: Path, broker: Any) -> tuple[Line, str]:
    """The story's line and the press page's address."""
    port = free_port()
    accounts = tmp_path / "screen-accounts"
    write_accounts(accounts)
    line = Line(tmp_path, broker, presses=("p1",), adjust=screen_config(port, accounts))
    await line.start()
    return line, f"http://127.0.0.1:{port}/press/p1"


def send(line: Line, name: str, operator: str, **fields: str) -> str:
    """A command as an operator terminal sends it over MQTT (its request id)."""
    assert line.sub is not None
    request_id = uuid.uuid4().hex[:8]
    payload = orjson.dumps(stamped({"request_id": request_id, "operator": operator,
                                    **fields}))
    line.sub.client.publish(command_topic(line.root, "p1", name), payload, qos=1)
    return request_id


class Page:
    """The press page in the browser thread (see tests/support/browser.py)."""

    def __init__(self, browser: Browser, page: Any) -> None:
        self.browser, self.page = browser, page

    async def wait(self, selector: str, state: str = "visible") -> None:
        await self.browser.run(lambda: self.page.wait_for_selector(selector, state=state))

    async def text(self, selector: str) -> str:
        return await self.browser.run(lambda: self.page.inner_text(selector))

    async def svg_text(self, selector: str) -> str:
        """The text of an SVG element (not an HTML element: no inner text)."""
        return await self.browser.run(lambda: self.page.text_content(selector) or "")

    async def texts(self, selector: str) -> list[str]:
        return await self.browser.run(lambda: self.page.locator(selector).all_inner_texts())

    async def count(self, selector: str) -> int:
        return await self.browser.run(lambda: self.page.locator(selector).count())

    async def colour(self, selector: str, prop: str = "background-color") -> str:
        return await self.browser.run(lambda: self.page.eval_on_selector(
            selector, f"e => getComputedStyle(e).getPropertyValue('{prop}')"))

    async def click(self, selector: str) -> None:
        await self.browser.run(lambda: self.page.click(selector))

    async def fill(self, selector: str, value: str) -> None:
        await self.browser.run(lambda: self.page.fill(selector, value))

    async def goto(self, url: str) -> None:
        await self.browser.run(lambda: self.page.goto(url))

    async def screenshot(self, path: Path, width: int = 1280, height: int = 800) -> None:
        """The whole page in one viewport (a sticky footer stays at the bottom)."""
        def shoot() -> None:
            full = self.page.evaluate("document.documentElement.scrollHeight")
            self.page.set_viewport_size({"width": width, "height": max(height, int(full))})
            self.page.screenshot(path=str(path))
            self.page.set_viewport_size({"width": width, "height": height})

        await self.browser.run(shoot)


async def measure(line: Line, page: Page, values: list[tuple[str, str]],
                  then: list[str]) -> None:
    """Send values one at a time, each once the page shows the previous one."""
    for (gauge, value), selector in zip(values, then, strict=True):
        line.measure("p1", gauge, value)
        await page.wait(selector)


async def story(line: Line, page: Page, url: str) -> AsyncIterator[str]:
    """The steps of the module doc, each yielded once the page shows it."""
    await page.wait("body.state-awaiting_first_article #fa-table tr.next[data-key=C1]")
    yield "awaiting"
    await wait_gauges_online(line, "p1")
    await measure(line, page, FAIL_FIRST_ARTICLE[:1], ["#fa-table tr.pass[data-key=C1]"])
    await page.wait("body.state-first_article #fa-table tr.next[data-key=C2]")
    yield "first_article"
    await measure(line, page, FAIL_FIRST_ARTICLE[1:],
                  ["#fa-table tr.pass[data-key=C2]", "#fa-verdict.fail"])
    await page.wait("body.state-hold #hold-banner")
    yield "first_article_fail"
    await measure(line, page, BRK100_PASS, [  # attempt 2
        "#fa-table tr.next[data-key=C2]", "#fa-table tr.next[data-key=C3]",
        "#fa-verdict.pass"])
    await page.wait("body.state-released")
    yield "first_article_pass"
    await page.wait("#patrol.due")
    yield "patrol_due"
    await measure(line, page, [("g1", "25.004"), ("g2", "12.510"), ("g2", "0.010")], [
        "article.char-card[data-char=C1] circle.point", "article.char-card[data-char=C2] "
        "circle.point", "article.char-card[data-char=C3] circle.point"])
    # strokes made after the passing check: the hold's containment has parts to isolate
    assert line.daemon is not None
    runtime = line.daemon.presses["p1"]
    passed_at = runtime.workflow.context()["stroke_count"]
    await line.sub.wait_for(
        lambda _m: runtime.workflow.context()["stroke_count"] > passed_at, 15)
    await measure(line, page, [("g1", "25.040")],  # in tolerance, beyond UCL 25.03
                  ["article.char-card[data-char=C1] circle.point.signal"])
    await page.wait("body.state-hold li.alarm.rule.unacked")
    yield "hold"
    await page.click("#sign-in")
    await page.fill("#field-account", ACCOUNT)
    await page.fill("#field-password", PASSWORD)
    await page.click("#dialog-ok")
    await page.wait("#operator")
    await page.click("li.alarm.rule .ack-button")
    await page.fill("#field-note", "die checked, burr on punch 2")
    await page.click("#dialog-ok")
    await page.wait("li.alarm.rule.acked")
    yield "acknowledged"
    # the hold opened a containment: the screen names the suspect parts to isolate, and
    # the release after it carries their disposition (issue 14, containment)
    await page.wait("#containment .kv.parts dd")
    parts = int(await page.text("#containment .kv.parts dd"))
    assert parts > 0
    send(line, "release", "Q7", why="punch 2 reground", sorted_good=str(parts),
         reworked="0", scrapped="0", note="the strokes made while on hold were sorted too")
    await page.wait("body.state-released")
    yield "released"
    line.sims["p1"].set_die(8)  # a die change: new setup, new phase
    await page.wait("body.state-awaiting_first_article")
    await measure(line, page, BRK100_PASS, [
        "#fa-table tr.next[data-key=C2]", "#fa-table tr.next[data-key=C3]",
        "#fa-verdict.pass"])
    await page.wait("body.state-released")
    await measure(line, page, [("g1", "25.008"), ("g2", "12.520"), ("g2", "0.012"),
                               ("g1", "24.996")], [
        "article.char-card[data-char=C1] g.marker.die_change",
        "article.char-card[data-char=C2] g.marker.die_change",
        "article.char-card[data-char=C3] g.marker.die_change",
        "article.char-card[data-char=C1] .last-value:has-text('24.996')"])
    yield "production"
    await measure(line, page, [("g2", "12.700")], ["#i100-banner"])
    yield "inspection_100"
    await page.goto(url + "?lang=zh")
    await page.wait("html[lang=zh-CN] body.state-released #i100-banner")
    yield "zh"
