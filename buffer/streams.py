"""Stream policies: what the outbox does with each stream's rows, handed in at open.

The buffer knows no stream by name (``buffer`` never imports ``collector``): the
collector's table (``collector/streams.py``) says per stream whether its rows are
``durable`` (synced before anything acts on them even when they stay local), ``published``
(False: history only, stored as delivered), ``sheddable`` (the oldest undelivered rows
may be dropped when memory or the size bound runs out; everything else never is) and
``live`` (the publisher's live lane after an outage). An outbox opened without policies
sheds and drops nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class StreamPolicy:
    name: str
    durable: bool
    published: bool
    sheddable: bool = False
    live: bool = False


class Streams:
    """The policies of every stream, by name."""

    def __init__(self, policies: Iterable[StreamPolicy] = ()) -> None:
        self._by_name = {p.name: p for p in policies}

    def __getitem__(self, name: str) -> StreamPolicy:
        return self._by_name[name]

    def __iter__(self) -> Iterator[StreamPolicy]:
        return iter(self._by_name.values())

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def sheddable(self) -> tuple[str, ...]:
        return tuple(p.name for p in self if p.sheddable)

    def live(self) -> tuple[str, ...]:
        return tuple(p.name for p in self if p.live)


NO_POLICIES = Streams()
