"""Shared fixtures: a private Mosquitto per test (free port, own data dir)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from sim.local_broker import LocalBroker

# CI runs the same examples every time (a red CI must be reproducible, and a long shrink
# must not eat the CI budget); developers get fresh random examples on every run.
settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[LocalBroker]:
    """A Mosquitto on a free 127.0.0.1 port, persistence in tmp_path; stopped at teardown.
    A test may ``stop()`` / ``kill()`` / ``restart()`` it (same port)."""
    b = LocalBroker(port=0, data_dir=tmp_path / "mosquitto")
    b.start()
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture
async def line(tmp_path: Path, broker: LocalBroker):
    """Press p1 of the example config with its simulator, gauges, the daemon and a
    subscriber (tests/support/line.py). A test module may override it."""
    from tests.support.line import Line

    started = Line(tmp_path, broker, presses=("p1",))
    try:
        yield await started.start()
    finally:
        await started.close()


# -- other brokers (issue 15, docs/brokers.md) ------------------------------------------
# One broker of each kind per test module (RabbitMQ boots in 5-10 s here): tests that use
# ``any_broker`` run once per kind, grouped by kind. They share the broker, so each test
# uses its own topic root and client ids. A kind whose Debian package is missing is
# skipped with the package's name (scripts/setup installs all three).

@pytest.fixture(scope="module", params=["mosquitto", "rabbitmq", "nats"])
def any_broker(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    from sim.other_brokers import LocalNats, LocalRabbitMQ, missing_reason

    kind = request.param
    reason = missing_reason(kind)
    if reason is not None:
        pytest.skip(f"{kind}: {reason}")
    data_dir = tmp_path_factory.mktemp(kind)
    if kind == "rabbitmq":
        b = LocalRabbitMQ(data_dir=data_dir)
    elif kind == "nats":
        b = LocalNats(data_dir=data_dir)
    else:
        b = LocalBroker(data_dir=data_dir)
    b.start()
    try:
        yield b
    finally:
        b.stop()


# -- PostgreSQL for the sink (issue 15, docs/sink.md) -----------------------------------
PG_ADMIN_DSN = os.environ.get("PRESS_COLLECTOR_TEST_PG", "host=127.0.0.1 user=postgres "
                              "dbname=postgres")


@pytest.fixture(scope="module")
def pg_dsn() -> Iterator[str]:
    """A database of its own on the machine's PostgreSQL (127.0.0.1:5432, trust auth),
    created for the module and dropped after it."""
    import uuid

    psycopg = pytest.importorskip("psycopg", reason="the sink extra (psycopg 3) is missing: "
                                  "pip install -e '.[sink]' (scripts/setup does)")
    name = f"pc_test_{uuid.uuid4().hex[:10]}"
    try:
        admin = psycopg.connect(PG_ADMIN_DSN, autocommit=True)
    except psycopg.OperationalError as exc:
        pytest.skip(f"no PostgreSQL at {PG_ADMIN_DSN!r}: {str(exc).strip()[:200]}")
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield PG_ADMIN_DSN.replace("dbname=postgres", f"dbname={name}")
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
