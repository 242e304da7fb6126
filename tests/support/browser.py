"""A real browser for the line-side screen's tests and screenshots: Debian's chromium
driven by Playwright for Python (no browser download: ``executable_path``).

Playwright's sync API runs in a thread of its own (one worker), so the test's event loop,
where the daemon runs, goes on while the browser waits for the page; every call goes
through :meth:`Browser.run`. One browser per test module (start-up is the slow part);
each test opens its own page.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

CHROMIUM = os.environ.get("PRESS_COLLECTOR_CHROMIUM", "/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", "--disable-sync",
         "--disable-quic"]
T = TypeVar("T")


def missing_reason() -> str | None:
    """Why the browser tests cannot run here (None: they can)."""
    if not (os.path.exists(CHROMIUM) or shutil.which(CHROMIUM)):
        return f"no chromium at {CHROMIUM} (Debian package 'chromium'; scripts/setup " \
               "installs it as root)"
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "playwright is not installed (requirements/dev.txt; make setup)"
    return None


class Browser:
    """Chromium in its own thread; ``await browser.run(fn, ...)`` calls fn there."""

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="chromium")
        self._pw: Any = None
        self.browser: Any = None

    def _start(self) -> None:
        from playwright.sync_api import sync_playwright

        self._pw = sync_playwright().start()
        self.browser = self._pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)

    def _stop(self) -> None:
        if self.browser is not None:
            self.browser.close()
        if self._pw is not None:
            self._pw.stop()

    def start(self) -> Browser:
        self._executor.submit(self._start).result(timeout=60)
        return self

    def stop(self) -> None:
        try:
            self._executor.submit(self._stop).result(timeout=30)
        finally:
            self._executor.shutdown(wait=True)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def page(self, url: str, width: int = 1280, height: int = 900,
                   locale: str = "en-GB") -> Any:
        """A new page (its own context: cookies, language) at ``url``."""
        def open_page() -> Any:
            context = self.browser.new_context(viewport={"width": width, "height": height},
                                               locale=locale)
            page = context.new_page()
            page.set_default_timeout(20_000)
            page.goto(url)
            return page

        return await self.run(open_page)
