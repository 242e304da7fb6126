"""The line-side screen in a real browser (Debian's chromium, Playwright), on the press
simulator and pty gauges, through a first article that fails, one that passes, a patrol
check, a rule signal that holds the press, an alarm acknowledged on the screen, a
quality release, a die change and 100 % inspection (tests/support/screen_story.py).

The test reads the page as a person would: texts, classes, colours, the chart's SVG
elements; never the JSON behind it. One browser for the module."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from sim.local_broker import LocalBroker
from tests.support.browser import Browser, missing_reason
from tests.support.screen_story import Page, start_line, story

RED, GREEN, AMBER = "rgb(185, 28, 28)", "rgb(21, 128, 61)", "rgb(217, 119, 6)"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    reason = missing_reason()
    if reason is not None:
        pytest.skip(reason)
    started = Browser().start()
    try:
        yield started
    finally:
        started.stop()


async def test_first_article_fail_hold_release_on_the_screen(
        tmp_path: Path, broker: LocalBroker, browser: Browser) -> None:
    line, url = await start_line(tmp_path, broker)
    try:
        page = Page(browser, await browser.page(url + "?lang=en"))
        seen = []
        async for step in story(line, page, url):
            seen.append(step)
            await CHECKS[step](page)
        assert seen == list(CHECKS)
        assert line.contract_violations() == []
    finally:
        await line.close()


async def awaiting(page: Page) -> None:
    assert await page.text("#state") == "AWAITING FIRST ARTICLE"
    assert await page.text("#ids .part_number dd") == "BRK-100"
    assert await page.text("#ids .die_id dd") == "7"
    assert await page.text("#ids .material_lot dd") == "L2411-01"
    assert await page.count("#fa-table tbody tr") == 3
    steps = await page.texts("#next-steps li")
    assert steps[0].startswith("Measure the first piece: C1 Hole distance (gauge g1)")


async def first_article(page: Page) -> None:
    assert await page.text("#state") == "FIRST ARTICLE"
    assert await page.colour("#head") == AMBER
    assert await page.text("#fa-table tr[data-key=C1] td.value") == "25.010"
    assert await page.text("#fa-table tr[data-key=C1] .verdict") == "PASS"
    assert await page.text("#fa-table tr[data-key=C2] td.value") == ""
    assert "1 of 3 measured" in await page.text("#fa-title")
    assert "measure now" in await page.text("#fa-table tr.next")


async def first_article_fail(page: Page) -> None:
    assert await page.text("#fa-verdict") == "FIRST ARTICLE FAILED — press on hold"
    assert await page.colour("#fa-verdict") == RED
    assert await page.text("#fa-table tr.fail[data-key=C3] td.value") == "0.080"
    assert await page.text("#state") == "ON HOLD"
    assert await page.colour("#head") == RED
    assert (await page.text("#hold-banner")).startswith("ON HOLD: the first article failed")
    steps = await page.texts("#next-steps li.first_article_failed")
    assert steps and "First article failed (C3)" in steps[0]


async def first_article_pass(page: Page) -> None:
    assert await page.text("#fa-verdict") == "FIRST ARTICLE PASSED — press released"
    assert await page.colour("#fa-verdict") == GREEN
    assert "attempt 2" in await page.text("#fa-title")
    assert await page.text("#state") == "RELEASED"
    assert await page.colour("#head") == GREEN
    assert await page.count("#hold-banner:visible") == 0
    assert int(await page.text("#strokes-since")) >= 0


async def patrol_due(page: Page) -> None:
    assert (await page.text("#patrol .due-line")).startswith("Check due: C1, C2, C3")
    assert "left" in await page.text("#patrol .countdown")
    assert any(s.startswith("Patrol check due") for s in await page.texts("#next-steps li"))


async def hold(page: Page) -> None:
    assert await page.text("#state") == "ON HOLD"
    assert "reaction to Process out of control on C1" in await page.text("#hold-banner")
    alarm = await page.text("li.alarm.rule")
    assert "Process out of control" in alarm and "rule 1" in alarm and "hold" in alarm
    card = "article.char-card[data-char=C1]"
    assert await page.count(f"{card} circle.point") == 2
    assert await page.count(f"{card} circle.point.signal") == 1
    assert await page.svg_text(f"{card} .signal-label") == "rule 1"
    assert await page.count(f"{card} line.limit.ucl") == 1
    assert await page.svg_text(f"{card} .limit-label.ucl") == "UCL 25.030"
    assert await page.text(f"{card} .last-value") == "25.040 mm"
    steps = await page.texts("#next-steps li")
    assert any(s.startswith("Stop producing: Process out of control on C1") for s in steps)
    assert any("alarm(s) not acknowledged" in s for s in steps)


async def acknowledged(page: Page) -> None:
    assert await page.text("#operator") == "OP1 (production)"
    assert "acknowledged by OP1" in await page.text("li.alarm.rule")
    assert await page.count("li.alarm.rule .ack-button") == 0
    assert "OP1 acknowledge_alarm" in await page.text("#last-command")


async def released(page: Page) -> None:
    assert await page.text("#state") == "RELEASED"
    assert await page.count("#hold-banner:visible") == 0
    assert "Q7 release" in await page.text("#last-command")


async def production(page: Page) -> None:
    c1 = "article.char-card[data-char=C1]"
    assert await page.count(f"{c1} circle.point") == 4
    assert await page.count(f"{c1} g.marker.die_change") == 1
    assert await page.svg_text(f"{c1} g.marker.die_change text") == "die change"
    assert await page.count(f"{c1} circle.point.signal") == 1  # the old phase's signal
    assert await page.count(f"{c1} line.limit.ucl") == 2  # limits per phase
    assert await page.count("#fa:visible") == 0  # the first article is history now
    assert "Individuals chart" in await page.text(f"{c1} header")


async def inspection_100(page: Page) -> None:
    banner = await page.text("#i100-banner")
    assert banner.startswith("100 % INSPECTION: measure every piece")
    assert "Out of tolerance C2" in await page.text("li.alarm.out_of_tolerance")
    assert await page.text("#state") == "RELEASED"  # a mode, not a state


async def zh(page: Page) -> None:
    assert await page.text("#state") == "已放行"
    assert (await page.text("#i100-banner")).startswith("100%全检")
    assert await page.text("#ids .part_number dt") == "零件号"
    assert "换模" in await page.svg_text("article.char-card[data-char=C1] g.marker.die_change")
    assert await page.text("#next-steps h2") == "现在该做什么"


CHECKS = {"awaiting": awaiting, "first_article": first_article,
          "first_article_fail": first_article_fail, "first_article_pass": first_article_pass,
          "patrol_due": patrol_due, "hold": hold, "acknowledged": acknowledged,
          "released": released, "production": production, "inspection_100": inspection_100,
          "zh": zh}
