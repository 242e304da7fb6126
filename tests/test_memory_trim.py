"""Freed heap goes back to the system after each prune round (issue 12, "Memory").

glibc keeps what SQLite and Python free in its arenas; the daemon's RSS rose in steps at
the prune rounds and was never given back. ``buffer.memory.trim`` (glibc ``malloc_trim``)
is called from the daemon's prune loop when ``buffer.release_memory`` is on (default).
"""

from __future__ import annotations

import asyncio
import ctypes
from pathlib import Path

import pytest

from buffer import memory
from buffer.store import Outbox
from collector import daemon as daemon_module
from collector.config import LoadedConfig
from collector.daemon import Daemon
from sim.local_broker import LocalBroker
from tests.support.line import Line

needs_glibc = pytest.mark.skipif(not memory.available(), reason="glibc malloc_trim only")


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@needs_glibc
def test_trim_gives_free_pages_inside_the_heap_back() -> None:
    """40 MB of 1 KiB blocks, every 64th kept (so the heap cannot shrink from its top and
    glibc's own trimming at free() cannot help): the freed pages stay in RSS until
    ``trim``, which gives most of them back."""
    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    size, count = 1024, 40_000
    memory.trim()
    blocks = []
    for _ in range(count):
        p = libc.malloc(size)
        assert p
        ctypes.memset(p, 1, size)
        blocks.append(p)
    kept = blocks[::64]
    keep = set(kept)
    for p in blocks:
        if p not in keep:
            libc.free(p)
    freed_but_held = rss_kib()
    trimmed = memory.trim()
    after = rss_kib()
    try:
        assert trimmed is not None and trimmed.released
        assert freed_but_held - after > 20 * 1024, (freed_but_held, after)
    finally:
        for p in kept:
            libc.free(p)


def with_release(on: bool):
    def adjust(config: LoadedConfig) -> LoadedConfig:
        buf = config.collector.buffer.model_copy(update={"release_memory": on})
        return config.model_copy(update={"collector": config.collector.model_copy(
            update={"buffer": buf})})
    return adjust


async def until(predicate, timeout: float, what: str) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)


@pytest.mark.parametrize("on", [True, False])
async def test_each_prune_round_gives_the_heap_back_unless_switched_off(
        tmp_path: Path, broker: LocalBroker, monkeypatch: pytest.MonkeyPatch, on: bool
        ) -> None:
    prunes: list[int] = []
    trims: list[memory.Trimmed | None] = []
    real_prune, real_trim = Outbox.prune, memory.trim

    def counting_prune(self: Outbox, *args: object, **kwargs: object) -> int:
        prunes.append(1)
        return real_prune(self, *args, **kwargs)  # type: ignore[arg-type]

    def counting_trim(pad: int = 0) -> memory.Trimmed | None:
        trims.append(got := real_trim(pad))
        return got

    monkeypatch.setattr(Outbox, "prune", counting_prune)
    monkeypatch.setattr(daemon_module.memory, "trim", counting_trim)
    line = Line(tmp_path, broker, presses=("p1",), adjust=with_release(on))
    await line.start()
    try:
        await line.stop_daemon()
        assert line.config is not None
        daemon = Daemon(line.config)
        daemon.prune_every_s = 0.1
        line.daemon = daemon
        line.task = asyncio.create_task(daemon.run())
        await asyncio.wait_for(daemon.ready.wait(), 10)
        await until(lambda: len(prunes) >= 3, 15, "three prune rounds")
        if on:
            await until(lambda: len(trims) >= 3, 5, "a trim after each prune")
            if memory.available():  # the trims are counted in /health
                health = daemon.health()["buffer"]
                assert isinstance(health, dict) and health["heap_trims"] >= 3
        else:
            assert trims == []
            assert "heap_trims" not in daemon.health()["buffer"]
        await line.stop_daemon()
    finally:
        await line.close()
