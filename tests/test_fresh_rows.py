"""FreshRows (collector/fresh_rows.py): the rows of the latest commits, kept for the
publisher's one-lane drain. Pure bookkeeping: tested alone here; the publisher that uses
it runs against a real outbox and Mosquitto in tests/test_publisher.py."""

from __future__ import annotations

import pytest

from buffer.store import Committed
from collector.fresh_rows import FreshRows


def notice(first: int, last: int, pending: list[int] | None = None,
           stream: str = "telemetry") -> Committed:
    ids = list(range(first, last + 1)) if pending is None else pending
    rows = tuple((i, stream, f"t/{i}", b"%d" % i) for i in ids)
    return Committed(first, last, len(rows), (), False, rows)


def ids(got: tuple[list[tuple[int, str, bytes]], int] | None) -> tuple[list[int], int]:
    assert got is not None
    return [r[0] for r in got[0]], got[1]


def test_serves_the_notified_rows_in_order_up_to_the_snapshot() -> None:
    fresh = FreshRows(100)
    fresh.add(notice(11, 15))
    fresh.add(notice(16, 18, pending=[17]))  # 16 and 18 were stored delivered (history)
    assert ids(fresh.take(10, 16, 100)) == ([11, 12, 13, 14, 15], 16)
    assert ids(fresh.take(16, 18, 100)) == ([17], 18)
    assert ids(fresh.take(18, 18, 100)) == ([], 18)


def test_limit_leaves_the_cursor_on_the_last_row_taken() -> None:
    fresh = FreshRows(100)
    fresh.add(notice(1, 10))
    assert ids(fresh.take(0, 10, 4)) == ([1, 2, 3, 4], 4)
    assert ids(fresh.take(4, 10, 100)) == ([5, 6, 7, 8, 9, 10], 10)


@pytest.mark.parametrize("after, hi", [
    (5, 20),   # the cursor is behind the rows kept: a backlog to read from SQLite
    (10, 21),  # a commit is visible whose notice has not arrived yet
])
def test_answers_none_when_the_range_is_not_covered(after: int, hi: int) -> None:
    fresh = FreshRows(100)
    fresh.add(notice(11, 20))
    assert fresh.take(after, hi, 100) is None


def test_nothing_vouched_for_before_the_first_notice_or_after_a_gap() -> None:
    fresh = FreshRows(100)
    assert fresh.take(0, 0, 100) is None
    fresh.add(notice(1, 5))
    fresh.add(notice(8, 9))  # 6..7 never notified (a failed listener): start afresh at 8
    assert fresh.take(5, 9, 100) is None
    assert ids(fresh.take(7, 9, 100)) == ([8, 9], 9)


def test_the_cursor_ahead_of_the_rows_kept_drops_them() -> None:
    fresh = FreshRows(100)
    fresh.add(notice(1, 10))
    assert ids(fresh.take(6, 10, 100)) == ([7, 8, 9, 10], 10)


def test_cap_drops_the_oldest_and_stops_vouching_for_them() -> None:
    fresh = FreshRows(4)
    fresh.add(notice(1, 10))
    assert fresh.take(0, 10, 100) is None  # 1..6 are gone: SQLite has them
    assert ids(fresh.take(6, 10, 100)) == ([7, 8, 9, 10], 10)


def test_skipped_streams_are_not_kept() -> None:
    fresh = FreshRows(100, skip_streams=("telemetry",))
    fresh.add(notice(1, 3, stream="telemetry"))
    fresh.add(notice(4, 5, stream="events"))
    assert ids(fresh.take(0, 5, 100)) == ([4, 5], 5)


def test_clear_forgets_everything() -> None:
    fresh = FreshRows(100)
    fresh.add(notice(1, 3))
    fresh.clear()
    assert fresh.take(0, 3, 100) is None
    with pytest.raises(ValueError):
        FreshRows(0)
