"""press-collector export qdas|csv (issue 14): real buffer files written by the real
workflow, exported through the CLI, and parsed back with a small parser of our own,
field by field against the buffer's rows (read here with plain sqlite3 + JSON)."""

from __future__ import annotations

import csv
import io
import os
import re
import sqlite3
import threading
import time
import tracemalloc
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from buffer.store import Outbox, OutboxRow
from collector.cli import main
from collector.domain import Event
from collector.export.csv_out import COLUMNS, write_csv
from collector.export.measurements import CATALOGUE, Measurement, measurements
from collector.messages import encode_event, iso_utc
from tests.support.quality_buffer import PART, REPO_CONFIG, T0, build

CODES = {code: name for name, (code, _) in CATALOGUE.items()}


@pytest.fixture(autouse=True)
def plant_time(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Local time of the exporting machine: the plant's (UTC+8, no DST)."""
    monkeypatch.setenv("TZ", "Asia/Shanghai")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.fixture(scope="module")
def story(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return build(tmp_path_factory.mktemp("buf") / "buffer.sqlite")


# -- the buffer's rows, read independently ------------------------------------------------
PROCESS = {"annotation", "setup", "state_change"}


def _code(kind: str, data: dict[str, Any]) -> int | None:
    if kind == "annotation":
        return CATALOGUE[data["type"]][0]
    if kind == "setup":
        return CATALOGUE["job_start"][0] if "job_start" in data["reasons"] else None
    if data["to"] == "hold":
        return CATALOGUE["hold"][0]
    if data["from"] == "hold" and data["to"] == "released":
        return CATALOGUE["release"][0]
    return None


def buffer_values(path: Path, part: str, start: float | None = None,
                  end: float | None = None) -> list[dict[str, Any]]:
    """Every first-article and patrol value of ``part`` judged in [start, end), with the
    process events since the previous value of its characteristic on that press."""
    conn = sqlite3.connect(path)
    docs = [orjson.loads(p) for (p,) in conn.execute(
        "SELECT payload FROM messages WHERE stream = 'events' AND press != '_collector' "
        "ORDER BY press, seq")]
    conn.close()
    voided = {d["data"]["effect"]["voided"]["reading_id"] for d in docs
              if d["schema"].endswith("/command") and "voided" in (d["data"].get("effect")
                                                                   or {})}
    out: list[dict[str, Any]] = []
    codes: list[tuple[int, int]] = []  # (position, code)
    last_seen: dict[tuple[str, str], int] = {}
    last_value_event = -1
    for pos, d in enumerate(docs):
        kind = d["schema"].split("/", 1)[1]
        if kind in PROCESS:
            code = _code(kind, d["data"])
            if code is not None:
                codes.append((pos, code))
            continue
        if kind == "first_article":
            results = [(r, "first_article") for r in d["data"]["results"]]
        elif kind == "measurement":
            results = [(d["data"], d["data"]["purpose"])]
        else:
            continue
        for r, purpose in results:
            key = (d["press"], r["characteristic"])
            since = last_seen.get(key, last_value_event)
            last_seen[key] = pos
            ts = datetime.fromisoformat(d["ts"].replace("Z", "+00:00")).timestamp()
            if d["context"]["part_number"] != part or (start is not None and ts < start) \
                    or (end is not None and ts >= end):
                continue
            out.append({"press": d["press"], "characteristic": r["characteristic"],
                        "name": r["name"], "nominal": r["nominal"], "lsl": r["lsl"],
                        "usl": r["usl"], "unit": r["unit"], "value": r["value"],
                        "measured_ts": r["measured_ts"], "purpose": purpose,
                        "lot": d["context"]["material_lot"],
                        "operator": d["context"]["operator"], "gauge": r["gauge"],
                        "voided": r["reading_id"] in voided,
                        "codes": [c for p, c in codes if since < p < pos],
                        "subgroup": (r.get("subgroup") or {}).get("id"),
                        "position": (r.get("subgroup") or {}).get("position"),
                        "attempt": d["data"].get("attempt"), "context": d["context"],
                        "seq": d["seq"],
                        "deviation": r["deviation"], "verdict": r["verdict"]})
        last_value_event = pos
    return out


# -- a small independent .dfq parser ---------------------------------------------------------
K_LINE = re.compile(r"K(\d{4})(?:/(\d+))? (.*)")


def parse_dfq(raw: bytes, encoding: str = "utf-8-sig") -> tuple[dict[int, str],
                                                                  dict[int, dict[int, str]],
                                                                  list[dict[Any, str]]]:
    """(part fields, characteristic fields by number, value blocks in file order)."""
    text = raw.decode(encoding)
    assert text.endswith("\r\n"), "every line ends with CRLF"
    lines = text[:-2].split("\r\n")
    assert all("\n" not in ln and "\r" not in ln for ln in lines)
    head: dict[int, str] = {}
    chars: dict[int, dict[int, str]] = {}
    values: list[dict[Any, str]] = []
    assert lines[0].startswith("K0100 "), "K0100 comes first"
    for line in lines:
        m = K_LINE.fullmatch(line)
        assert m, f"not a K-field line: {line!r}"
        key, index, value = int(m[1]), m[2], m[3]
        if key == 100 or 1000 <= key < 2000:
            assert index is None and key not in head
            head[key] = value
        elif 2000 <= key < 3000:
            assert index is not None and not values, "characteristics before the values"
            chars.setdefault(int(index), {})[key] = value
        elif key < 100:
            assert index is not None
            if key == 1:
                values.append({"char": index, 1: value})
            else:
                assert values and values[-1]["char"] == index, line
                assert key not in values[-1], f"field twice in one value: {line}"
                values[-1][key] = value
        else:
            raise AssertionError(f"unexpected field {line!r}")
    return head, chars, values


def decimals(text: str) -> int:
    return len(text.split(".", 1)[1]) if "." in text else 0


def run(*argv: str) -> int:
    return main(list(argv))


# -- Q-DAS ---------------------------------------------------------------------------------------
def test_qdas_file_parsed_back_field_by_field(story: Any, tmp_path: Path) -> None:
    out = tmp_path / "brk100.dfq"
    assert run("export", "qdas", "--part", PART, "--buffer", str(story.path),
               "--config-dir", str(REPO_CONFIG), "--out", str(out)) == 0
    raw = out.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")  # UTF-8 with BOM
    assert out.stat().st_mode & 0o777 == 0o600
    head, chars, values = parse_dfq(raw)
    expected = buffer_values(story.path, PART)
    assert len(expected) == 25

    # part and characteristics
    assert head[1001] == PART and head[1002] == "Bracket, left" and head[1004] == "B"
    assert head[1081] == "p1"
    assert int(head[100]) == len(chars) == 3
    by_id = {c[2001]: (i, c) for i, c in chars.items()}
    for e in expected:
        i, c = by_id[e["characteristic"]]
        assert c[2002] == e["name"] and c[2101] == e["nominal"] and c[2142] == e["unit"]
        assert c.get(2110) == e["lsl"] and c.get(2111) == e["usl"]  # absent: one-sided
        assert c[2004] == "0"
    assert by_id["C1"][1][2005] == "4" and by_id["C1"][1][2022] == "3"  # critical, 0.001
    assert by_id["C3"][1][2022] == str(max(decimals(by_id["C3"][1][2101]),
                                           decimals(by_id["C3"][1][2111])))

    # every value, in order, field by field
    assert len(values) == len(expected)
    for v, e in zip(values, expected, strict=True):
        i, _ = by_id[e["characteristic"]]
        assert v["char"] == str(i)
        assert v[1] == e["value"]
        assert v[2] == ("129" if e["voided"] else "0")
        assert v[4] == datetime.fromtimestamp(e["measured_ts"]).strftime("%d.%m.%Y/%H:%M:%S")
        assert v.get(5, "") == ",".join(map(str, e["codes"]))
        assert v.get(6) == e["lot"]
        assert v.get(8) == (f"#{e['operator']}" if e["operator"] else None)
        assert v[12] == f"#{e['gauge']}"
        assert v[15] == ("30" if e["purpose"] == "first_article" else "0")
        assert v.get(80) == e["subgroup"]
        assert v.get(81) == (str(e["position"]) if e["position"] else None)
        if e["purpose"] == "first_article":
            assert v[14] == f"p1/{e['seq']}/FA{e['attempt']}/1"
        assert f"die {e['context']['die_id']}" in v[9]
    # what the story did, seen in the file
    codes = [v.get(5) for v in values]
    assert codes[:3] == ["100"] * 3  # job start on the first value of every characteristic
    assert [v[2] for v in values].count("129") == 1  # the repeated measurement
    assert codes.count(str(CATALOGUE["die_change"][0])) == 3
    assert codes.count(str(CATALOGUE["material_lot_change"][0])) == 3
    assert codes.count("110,111") == 3  # hold and release before the last check


def test_qdas_period_cuts_and_event_codes_before_the_period(story: Any, tmp_path: Path
                                                            ) -> None:
    """A period starting before the die change: its first values carry the die change;
    values of the other part after the job change are not in it."""
    start, end = story.marks["before_die_change"], story.marks["before_job_change"]
    out = tmp_path / "period.dfq"
    assert run("export", "qdas", "--part", PART, "--buffer", str(story.path),
               "--description", "left bracket",
               "--from", iso_utc(start), "--to", iso_utc(end), "--out", str(out)) == 0
    head, _, values = parse_dfq(out.read_bytes())
    expected = buffer_values(story.path, PART, start, end)
    assert head[1002] == "left bracket"
    assert [v[1] for v in values] == [e["value"] for e in expected]
    assert len(values) == 15
    assert values[0][5] == str(CATALOGUE["die_change"][0])
    # local dates and times: a date alone means the whole local day
    out2 = tmp_path / "day.dfq"
    day = datetime.fromtimestamp(T0).strftime("%Y-%m-%d")
    assert run("export", "qdas", "--part", PART, "--buffer", str(story.path),
               "--description", "x", "--from", day, "--to", day, "--out", str(out2)) == 0
    assert len(parse_dfq(out2.read_bytes())[2]) == 25


def test_qdas_ansi_encoding_refuses_what_it_cannot_hold(story: Any, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]
                                                         ) -> None:
    out = tmp_path / "ansi.dfq"
    assert run("export", "qdas", "--part", PART, "--buffer", str(story.path),
               "--description", "Bracket, left", "--encoding", "cp1252",
               "--out", str(out)) == 0
    assert parse_dfq(out.read_bytes(), "cp1252")[0][1002] == "Bracket, left"
    assert run("export", "qdas", "--part", PART, "--buffer", str(story.path),
               "--description", "左支架", "--encoding", "cp1252", "--out",
               str(tmp_path / "zh.dfq")) == 2
    err = capsys.readouterr().err
    assert "'左支架' cannot be written in cp1252" in err and "--encoding utf-8-sig" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ansi.dfq"]  # no temp files left


# -- CSV --------------------------------------------------------------------------------------
def test_csv_one_row_per_value_against_the_buffer(story: Any, tmp_path: Path) -> None:
    out = tmp_path / "brk100.csv"
    assert run("export", "csv", "--part", PART, "--buffer", str(story.path),
               "--out", str(out)) == 0
    raw = out.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")  # Excel reads UTF-8 only with the BOM
    assert raw.count(b"\r\n") == 26  # header + 25 rows, CRLF
    rows = list(csv.DictReader(io.StringIO(raw.decode("utf-8-sig"), newline="")))
    expected = buffer_values(story.path, PART)
    assert tuple(rows[0]) == COLUMNS
    assert len(rows) == len(expected)
    for r, e in zip(rows, expected, strict=True):
        assert (r["characteristic"], r["value"], r["nominal"], r["unit"]) == (
            e["characteristic"], e["value"], e["nominal"], e["unit"])
        assert r["lsl"] == (e["lsl"] or "") and r["usl"] == (e["usl"] or "")
        assert r["deviation"] == e["deviation"] and r["verdict"] == e["verdict"]
        assert r["voided"] == ("yes" if e["voided"] else "")
        assert r["purpose"] == e["purpose"]
        assert r["measured_utc"] == iso_utc(e["measured_ts"])
        assert r["measured_local"] == datetime.fromtimestamp(e["measured_ts"]).strftime(
            "%Y-%m-%d %H:%M:%S.%f")[:-3]
        assert r["material_lot"] == e["lot"] and r["operator"] == (e["operator"] or "")
        assert r["die_id"] == str(e["context"]["die_id"])
        assert r["event_codes"] == " ".join(map(str, e["codes"]))
        for code in e["codes"]:
            assert CODES[code] in r["events"]
    # no --part: every part of the buffer (the other part's first article too)
    every = tmp_path / "all.csv"
    assert run("export", "csv", "--buffer", str(story.path), "--no-bom", "--delimiter", ";",
               "--out", str(every)) == 0
    raw = every.read_bytes()
    assert not raw.startswith(b"\xef\xbb\xbf")
    rows = list(csv.DictReader(io.StringIO(raw.decode("utf-8"), newline=""), delimiter=";"))
    assert len(rows) == 27 and {r["part_number"] for r in rows} == {PART, "BRK-200"}


def _m(**kw: Any) -> Measurement:
    base: dict[str, Any] = dict(
        press="p1", seq=1, event_id="e1", event_ts="2026-12-01T06:00:00.000Z",
        measured_ts=T0, purpose="patrol", part_number="BRK-100", plan_revision="B",
        characteristic="C1", name="width", char_class="critical", unit="µm",
        nominal="25.00", lsl="24.95", usl="25.05", resolution=None, value="-0.010",
        deviation="-0.010", verdict="pass", reading_id="r1", gauge="g1", channel=None,
        die_id="D1", material_lot="L1", heat_number=None, operator="OP1",
        stroke_count=1, phase=1)
    base.update(kw)
    return Measurement(**base)


def test_csv_quoting_unicode_and_formula_text(tmp_path: Path) -> None:
    out = tmp_path / "q.csv"
    rows = [_m(name='hole "A", left', operator="张伟", material_lot="=HYPERLINK(\"x\")",
               die_id="-D1"),
            _m(name="line\nbreak", value="-0.010")]
    assert write_csv(rows, out) == 2
    back = list(csv.DictReader(io.StringIO(out.read_text("utf-8-sig"), newline="")))
    assert back[0]["name"] == 'hole "A", left'  # quoted, quotes doubled, read back whole
    assert back[0]["operator"] == "张伟" and back[0]["unit"] == "µm"
    assert back[0]["material_lot"] == "'=HYPERLINK(\"x\")"  # never run as a formula
    assert back[0]["die_id"] == "'-D1"
    assert back[1]["name"] == "line break"  # one row per value, one line per row
    assert back[1]["value"] == "-0.010" and back[1]["deviation"] == "-0.010"  # numbers stay


# -- errors ------------------------------------------------------------------------------------
def test_export_errors_are_clear_and_write_nothing(story: Any, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "x.dfq"
    assert run("export", "qdas", "--part", "NOPE", "--buffer", str(story.path),
               "--description", "x", "--out", str(out)) == 1
    assert "no measurements of part NOPE (whole buffer)" in capsys.readouterr().err
    foreign = tmp_path / "foreign.sqlite"
    sqlite3.connect(foreign).execute("CREATE TABLE t (x)").connection.commit()
    assert run("export", "csv", "--buffer", str(foreign), "--out", str(out)) == 2
    assert "SQLite file of another application" in capsys.readouterr().err
    assert run("export", "csv", "--buffer", str(story.path), "--from", "yesterday",
               "--out", str(out)) == 2
    assert "--from 'yesterday': not a date or time" in capsys.readouterr().err
    assert run("export", "csv", "--buffer", str(story.path), "--from", "2026-12-05",
               "--to", "2026-12-01", "--out", str(out)) == 2
    assert "is not before --to" in capsys.readouterr().err
    assert run("export", "csv", "--buffer", str(story.path), "--delimiter", "ab",
               "--out", str(out)) == 2
    assert "delimiter 'ab' is not allowed" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["foreign.sqlite"]


# -- beside a running writer; bounded memory ---------------------------------------------
def synthetic_buffer(path: Path, n_values: int, telemetry_per_value: int = 1) -> None:
    """``n_values`` patrol measurement events (3 characteristics) plus telemetry rows,
    encoded by the real message code, committed in big batches."""
    outbox = Outbox.open(path, commit_interval_s=0.05)
    ctx = {"part_number": PART, "plan_revision": "B", "die_id": "D1",
           "material_lot": "L1", "heat_number": "H1", "stroke_count": 0,
           "state": "released", "first_article_attempt": 1, "unreleased_strokes": 0,
           "phase": 1, "operator": "OP1"}
    batch: list[OutboxRow] = []
    seq_t = 0
    for seq_e, i in enumerate(range(n_values), start=1):
        c = f"C{i % 3 + 1}"
        ts = T0 + i
        for _ in range(telemetry_per_value):
            seq_t += 1
            batch.append(OutboxRow("p1", "telemetry", seq_t, "t", b'{"x":' + b"1" * 300
                                   + b"}", delivered=True))
        body = {"characteristic": c, "name": c, "unit": "mm", "nominal": "25.00",
                "lsl": "24.95", "usl": "25.05", "value": f"25.{i % 50:03d}",
                "deviation": "0.001", "verdict": "pass", "reading_id": f"r{i}",
                "gauge": "g1", "measured_ts": ts, "action": "none", "purpose": "patrol",
                "subgroup": {"id": f"{c}/1/{i}", "position": 1, "size": 1}}
        batch.append(OutboxRow("p1", "events", seq_e, "e", encode_event(
            Event("measurement", ts, body, {**ctx, "stroke_count": i}), "p1", seq_e, "h"),
            delivered=True))
        if len(batch) >= 20_000:
            outbox.add_many(batch)
            outbox.flush_sync()
            batch = []
    outbox.add_many(batch)
    outbox.flush_sync()
    outbox.close()


def test_export_beside_a_writing_daemon(tmp_path: Path) -> None:
    """The writer keeps committing (WAL) while the export reads in pages: neither waits
    for the other, the export sees every value committed before it started."""
    path = tmp_path / "b.sqlite"
    synthetic_buffer(path, 6000)
    outbox = Outbox.open(path, commit_interval_s=0.005)  # the "daemon"
    stop = threading.Event()
    written = [0]

    def write() -> None:
        seq = outbox.last_seq("p1", "telemetry")
        while not stop.is_set():
            for _ in range(50):
                seq += 1
                outbox.add(OutboxRow("p1", "telemetry", seq, "t", b'{"x":1}'))
            outbox.flush_sync()
            written[0] += 50

    writer = threading.Thread(target=write)
    writer.start()
    try:
        rows = measurements(path, PART, page_rows=200)
        first = next(rows)
        before = written[0]
        out = tmp_path / "x.csv"
        n = write_csv(rows, out) + 1
        while written[0] == before:  # the writer went on during the export
            time.sleep(0.01)
    finally:
        stop.set()
        writer.join()
    assert first.value == "25.000" and n == 6000
    assert outbox.stats()["write_errors"] == 0
    outbox.close()


def peak_export_memory(path: Path, out: Path, fmt: str = "csv") -> int:
    from collector.export.qdas import write_qdas

    tracemalloc.start()
    try:
        if fmt == "csv":
            write_csv(measurements(path, PART), out)
        else:
            write_qdas(measurements(path, PART), out, PART, "x")
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_export_memory_does_not_grow_with_the_buffer(tmp_path: Path) -> None:
    """Python allocations while exporting 4x the rows stay within a small margin
    (bench/export_bench.py measures RSS over 1.5M rows)."""
    small, big = tmp_path / "small.sqlite", tmp_path / "big.sqlite"
    synthetic_buffer(small, 5_000)
    synthetic_buffer(big, 20_000)
    for fmt in ("csv", "dfq"):
        peak_small = peak_export_memory(small, tmp_path / f"s.{fmt}", fmt)
        peak_big = peak_export_memory(big, tmp_path / f"b.{fmt}", fmt)
        assert os.path.getsize(tmp_path / f"b.{fmt}") > 2 * peak_big  # output >> memory
        assert peak_big < peak_small * 1.3 + 256 * 1024, (fmt, peak_small, peak_big)


def test_worked_example_in_the_docs_is_what_the_export_writes(story: Any, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]
                                                              ) -> None:
    """docs/quality.md shows an excerpt of a real export of this story: every K-field line
    it shows is in the file the same command writes."""
    doc = (REPO_CONFIG.parent / "docs" / "quality.md").read_text()
    block = doc.split("Worked example", 1)[1].split("```\nK0100", 1)[1].split("```", 1)[0]
    shown = [re.split(r"\s{2,}", ln)[0] for ln in ("K0100" + block).splitlines()
             if ln.startswith("K")]
    assert len(shown) > 20
    out = tmp_path / "brk100.dfq"
    assert run("export", "qdas", "--part", PART, "--from", "2026-12-01T14:01:30+08:00",
               "--to", "2026-12-01T15:00+08:00", "--out", str(out), "--buffer",
               str(story.path), "--config-dir", str(REPO_CONFIG)) == 0
    assert (f"15 values of BRK-100 from 2026-12-01T14:01:30+08:00 to "
            f"2026-12-01T15:00+08:00 -> {out}") in capsys.readouterr().out
    written = set(out.read_bytes().decode("utf-8-sig").split("\r\n"))
    assert [ln for ln in shown if ln not in written] == []
