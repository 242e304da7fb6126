"""The seq mark file: what may have left the machine, kept outside the SQLite file.

Why a second file
-----------------
A subscriber drops duplicates by ``(press, stream, seq)``, so a seq that was published
must never come back with other content. The buffer's own high-water marks (the
``streams`` table) live in the same WAL as the rows: when the WAL is damaged (a torn
frame, garbage over valid frames, writes a power cut swallowed), SQLite silently rolls
the file back to the last valid frame, and with it the high-water marks, below what
subscribers already hold. This file is the independent witness: before any row becomes
visible to the publisher, the highest id and the highest seq per ``(press, stream)``
committed so far are written here and ``fdatasync``-ed (:meth:`SeqMarks.write`). At the
next start the buffer compares its own marks with this file; if the file is behind, it
was rolled back, and the seqs up to the mark are never issued again.

It also carries seqs across a buffer that is replaced: `press-collector buffer reset`
and `buffer salvage` archive the SQLite file but keep this one, so the new buffer goes on
above everything ever published.

Layout (survives a torn write of itself)
-----------------------------------------
Two slots of ``slot`` bytes each (the file is ``2 * slot`` bytes; slot = file size / 2).
A write goes to the slot of the *older* generation, in place: a torn write damages only
that slot, and the other one still holds the previous marks, which cover every row
visible before this write. Slot: ``MAGIC`` (4 bytes), generation (u64), body length
(u32), CRC-32 of the body (u32), body; zero padding. Body: ``id <n>\\n`` then one
``press<TAB>stream<TAB>seq`` line per stream. Writes in place need no new disk blocks
once the file exists, so marks can still be written when the disk is full.

The file is also the buffer's lock: the daemon holds ``flock(LOCK_EX)`` on it while it
runs, so two daemons (or a `buffer reset` under a running daemon) can never share one
buffer.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import struct
import zlib
from pathlib import Path

MAGIC = b"PCSM"
_HEAD = struct.Struct("<4sQII")  # magic, generation, body length, crc32
MIN_SLOT = 64 * 1024


class SeqMarkError(Exception):
    """The seq mark file cannot be used (locked by another process, unreadable)."""


def mark_path(buffer_path: str | os.PathLike[str]) -> Path:
    """``<buffer>-seqmark`` beside the buffer (SQLite's own files are -wal and -shm)."""
    return Path(f"{os.fspath(buffer_path)}-seqmark")


def _encode(last_id: int, seqs: dict[tuple[str, str], int]) -> bytes:
    lines = [f"id {last_id}\n"]
    lines += [f"{p}\t{s}\t{n}\n" for (p, s), n in seqs.items()]
    return "".join(lines).encode()


def _decode(body: bytes) -> tuple[int, dict[tuple[str, str], int]]:
    text = body.decode()
    head, _, rest = text.partition("\n")
    if not head.startswith("id "):
        raise ValueError("no id line")
    seqs: dict[tuple[str, str], int] = {}
    for line in rest.splitlines():
        press, stream, n = line.split("\t")
        seqs[(press, stream)] = int(n)
    return int(head[3:]), seqs


def _read_slot(data: bytes) -> tuple[int, int, dict[tuple[str, str], int]] | None:
    """(generation, id, seqs) of one slot, or None when it is not a whole valid slot."""
    if len(data) < _HEAD.size:
        return None
    magic, gen, length, crc = _HEAD.unpack_from(data)
    body = data[_HEAD.size:_HEAD.size + length]
    if magic != MAGIC or len(body) != length or zlib.crc32(body) != crc:
        return None
    try:
        last_id, seqs = _decode(body)
    except (ValueError, UnicodeDecodeError):
        return None
    return gen, last_id, seqs


def read_marks(path: Path) -> tuple[int, dict[tuple[str, str], int], str]:
    """Read without locking (``buffer check``): ``(id, seqs, state)``; state is
    ``missing``, ``ok``, ``one slot damaged`` or ``damaged``."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return 0, {}, "missing"
    return _parse(data)


def _slots(data: bytes) -> list[tuple[int, int, dict[tuple[str, str], int]]]:
    """Every valid slot: A at offset 0, B at ``MIN_SLOT * 2**k`` (the slot size may have
    grown; a grow writes the new B before it touches A, see :meth:`SeqMarks._grow`)."""
    found = []
    offsets = [0]
    off = MIN_SLOT
    while off < len(data):
        offsets.append(off)
        off *= 2
    for off in offsets:
        slot = _read_slot(data[off:])
        if slot is not None:
            found.append(slot)
    return found


def _parse(data: bytes) -> tuple[int, dict[tuple[str, str], int], str]:
    if not data:
        return 0, {}, "missing"
    good = _slots(data)
    if not good:
        return 0, {}, "damaged"
    _gen, last_id, seqs = max(good, key=lambda s: s[0])
    return last_id, seqs, "ok" if len(good) >= 2 else "one slot damaged"


class SeqMarks:
    """The open, locked seq mark file of one buffer (see the module docstring)."""

    def __init__(self, path: Path, fd: int, slot: int, gen: int, last_id: int,
                 seqs: dict[tuple[str, str], int], state: str) -> None:
        self.path = path
        self._fd = fd
        self._slot = slot
        self._gen = gen
        self.last_id = last_id  # what the file says (after the last write)
        self.seqs = dict(seqs)
        self.state = state  # as read at open: missing / ok / one slot damaged / damaged
        self.writes = 0

    @classmethod
    def open(cls, path: Path) -> SeqMarks:
        """Open (create) and lock the file; raise :class:`SeqMarkError` if another process
        holds it."""
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise SeqMarkError(f"{path}: cannot open the seq mark file: {exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            raise SeqMarkError(f"{path}: in use by another process (a running "
                               "press-collector?); stop it first") from exc
        try:
            size = os.fstat(fd).st_size
            data = os.pread(fd, size, 0) if size else b""
        except OSError as exc:
            os.close(fd)
            raise SeqMarkError(f"{path}: cannot read the seq mark file: {exc}") from exc
        last_id, seqs, state = _parse(data)
        good = _slots(data)
        gen = max((g[0] for g in good), default=0)
        slot = max(MIN_SLOT, size // 2)
        return cls(path, fd, slot, gen, last_id, seqs, state)

    def write(self, last_id: int, seqs: dict[tuple[str, str], int]) -> None:
        """Record ``last_id`` and ``seqs`` (the whole table) durably: the older slot is
        overwritten in place, then ``fdatasync``. Raises OSError (the caller keeps the
        rows invisible and retries)."""
        body = _encode(last_id, seqs)
        need = _HEAD.size + len(body)
        if need > self._slot:
            self._grow(need)
        gen = self._gen + 1
        head = _HEAD.pack(MAGIC, gen, len(body), zlib.crc32(body))
        os.pwrite(self._fd, head + body, (gen % 2) * self._slot)
        os.fdatasync(self._fd)
        self._gen = gen
        self.last_id = last_id
        self.seqs = dict(seqs)
        self.writes += 1

    def _grow(self, need: int) -> None:
        """A table larger than a slot (thousands of streams): double the slot size. The
        new B slot is written (beyond the old file) and synced before A is touched, so a
        torn grow leaves a valid slot (readers look for B at every power-of-two offset)."""
        slot = self._slot
        while slot < need:
            slot *= 2
        current = _encode(self.last_id, self.seqs)
        self._slot = slot
        gen = self._gen + 1 if (self._gen + 1) % 2 else self._gen + 2  # an odd gen: slot B
        for g in (gen, gen + 1):  # B at its new offset, then A
            head = _HEAD.pack(MAGIC, g, len(current), zlib.crc32(current))
            os.pwrite(self._fd, (head + current).ljust(slot, b"\0"), (g % 2) * slot)
            os.fdatasync(self._fd)
            self._gen = g

    def ensure_allocated(self) -> None:
        """Give the file its full size with real blocks (two zero-padded slots, synced), so
        later writes in place never need space: marks stay writable on a full disk."""
        size = os.fstat(self._fd).st_size
        if size == 2 * self._slot and self.state == "ok":
            return
        # both slots rewritten with the current marks (what was read, or nothing)
        body = _encode(self.last_id, self.seqs)
        for gen in (self._gen + 1, self._gen + 2):
            head = _HEAD.pack(MAGIC, gen, len(body), zlib.crc32(body))
            os.pwrite(self._fd, (head + body).ljust(self._slot, b"\0"), (gen % 2) * self._slot)
            os.fdatasync(self._fd)
            self._gen = gen
        self.state = "ok"

    def close(self) -> None:
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._fd)  # releases the flock
            self._fd = -1
