"""Health and metrics on 127.0.0.1: ``GET /health`` (JSON) and ``GET /metrics`` (Prometheus
text format 0.0.4), served by a tiny asyncio server inside the daemon.

Why its own server and no library: two read-only endpoints on loopback, scraped once in
a while; a raw ``asyncio.start_server`` costs nothing on the hot path and adds no
dependency. It binds to 127.0.0.1 only (a line PC is not a web server); put a reverse
proxy or node_exporter's textfile collector in front if a plant wants it remote.

Poll timing: :class:`PollTiming` keeps a fixed histogram of poll start jitter (actual
start - scheduled slot, 0.1 ms buckets up to 1 s, everything above in the last bucket),
so recording a poll is one integer increment, and p50/p99 are read from the counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

BUCKET_MS = 0.1
BUCKETS = 10_000  # 0 .. 1000 ms


class PollTiming:
    """Histogram of poll start jitter (seconds in, milliseconds out)."""

    __slots__ = ("count", "counts", "max_ms")

    def __init__(self) -> None:
        self.counts = [0] * (BUCKETS + 1)
        self.count = 0
        self.max_ms = 0.0

    def add(self, jitter_s: float) -> None:
        ms = jitter_s * 1000.0
        if ms < 0:
            ms = 0.0
        if ms > self.max_ms:
            self.max_ms = ms
        i = int(ms / BUCKET_MS)
        self.counts[i if i < BUCKETS else BUCKETS] += 1
        self.count += 1

    def quantile(self, q: float) -> float | None:
        """Upper edge of the bucket holding quantile ``q`` (ms), None without data."""
        if not self.count:
            return None
        rank = q * self.count
        seen = 0
        for i, n in enumerate(self.counts):
            seen += n
            if seen >= rank and n:
                return round(min((i + 1) * BUCKET_MS, max(self.max_ms, BUCKET_MS)), 3)
        return round(self.max_ms, 3)

    def summary(self) -> dict[str, Any]:
        return {"polls": self.count, "jitter_p50_ms": self.quantile(0.5),
                "jitter_p99_ms": self.quantile(0.99), "jitter_max_ms": round(self.max_ms, 3)}


def prometheus_text(health: dict[str, Any]) -> str:
    """The health document as Prometheus gauges/counters (numbers only)."""
    lines: list[str] = []

    def emit(name: str, value: Any, labels: str = "", kind: str = "gauge") -> None:
        if isinstance(value, bool):
            value = int(value)
        if not isinstance(value, int | float):
            return
        if f"# TYPE {name} " not in "".join(lines[-50:]):
            lines.append(f"# TYPE {name} {kind}")
        lines.append(f"{name}{labels} {value}")

    for press, st in sorted(health.get("presses", {}).items()):
        label = f'{{press="{press}"}}'
        for key, value in st.items():
            if key == "outputs":  # per output role (docs/outputs.md)
                for role, out in sorted(value.items()):
                    labels = f'{{press="{press}",role="{role}"}}'
                    emit("press_collector_output_writes", out["writes"], labels, "counter")
                    emit("press_collector_output_write_errors", out["write_errors"], labels,
                         "counter")
                    emit("press_collector_output_alarm", out["alarm"], labels)
                continue
            if isinstance(value, dict):  # per tag, e.g. sanitised_by_tag
                for tag, n in sorted(value.items()):
                    emit(f"press_collector_press_{key}", n,
                         f'{{press="{press}",tag="{tag}"}}', "counter")
                continue
            kind = "counter" if key in ("polls", "late_polls", "events", "poll_errors",
                                        "gauge_values", "gauge_errors") else "gauge"
            emit(f"press_collector_press_{key}", value, label, kind)
    for section in ("outbox", "publisher", "commands", "sparkplug"):
        for key, value in health.get(section, {}).items():
            emit(f"press_collector_{section}_{key}", value)
    for name, n in health.get("task_failures", {}).items():
        emit("press_collector_task_failures", n, f'{{task="{name}"}}', "counter")
    return "\n".join(lines) + "\n"


async def serve(health: Callable[[], dict[str, Any]], port: int,
                host: str = "127.0.0.1") -> asyncio.Server:
    """Start the endpoint; the caller closes the returned server."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readline(), 5.0)
            parts = request.decode("latin-1").split()
            path = parts[1] if len(parts) >= 2 else "/"
            while (await asyncio.wait_for(reader.readline(), 5.0)).strip():
                pass  # headers: ignored
            if path.startswith("/metrics"):
                body = prometheus_text(health()).encode()
                status, ctype = "200 OK", "text/plain; version=0.0.4"
            elif path.startswith("/health"):
                body = json.dumps(health(), default=str).encode()
                status, ctype = "200 OK", "application/json"
            else:
                body, status, ctype = b"try /health or /metrics\n", "404 Not Found", "text/plain"
            writer.write(f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\n"
                         f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                         + body)
            await writer.drain()
        except (TimeoutError, ConnectionError, OSError):
            pass
        except Exception as exc:  # e.g. the buffer unreadable: this request fails, not the server
            log.error("health/metrics request failed: %s", exc)
            with contextlib.suppress(ConnectionError, OSError):
                writer.write(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n"
                             b"Connection: close\r\n\r\n")
        finally:
            with contextlib.suppress(ConnectionError, OSError):
                writer.close()

    server = await asyncio.start_server(handle, host, port)
    log.info("health/metrics on http://%s:%d/health and /metrics", host, port)
    return server
