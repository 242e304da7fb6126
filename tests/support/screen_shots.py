"""Screenshots of the line-side screen for docs/screen/ (``make screenshots``,
``scripts/screenshots``): the story of tests/support/screen_story.py on the simulators,
one PNG per step, 1280 x 800 (a common panel PC), in English, and the Chinese page."""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

from sim.local_broker import LocalBroker
from tests.support.browser import Browser, missing_reason
from tests.support.screen_story import Page, start_line, story

REPO = Path(__file__).resolve().parents[2]
SHOTS = {"first_article": "first-article", "first_article_fail": "first-article-fail",
         "first_article_pass": "first-article-pass", "hold": "hold-rule-signal",
         "released": "released", "production": "production-chart",
         "inspection_100": "inspection-100", "zh": "zh-production"}


async def main(out: Path) -> int:
    reason = missing_reason()
    if reason is not None:
        print(f"screenshots: {reason}", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    browser = Browser().start()
    with tempfile.TemporaryDirectory(prefix="press-screen-") as tmp:
        broker = LocalBroker(port=0, data_dir=Path(tmp) / "broker")
        broker.start()
        line, url = await start_line(Path(tmp), broker)
        try:
            page = Page(browser, await browser.page(url + "?lang=en", width=1280, height=800))
            async for step in story(line, page, url):
                name = SHOTS.get(step)
                if name is not None:
                    await asyncio.sleep(0.3)  # the countdowns tick once
                    await page.screenshot(out / f"{name}.png")
                    print(f"screenshots: {out / (name + '.png')}")
        finally:
            await line.close()
            broker.stop()
            browser.stop()
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "screen")
    sys.exit(asyncio.run(main(parser.parse_args().out)))
