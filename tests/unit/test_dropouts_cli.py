"""`steadycast dropouts`: parsing --since, the table and summary, and its errors."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from monitor.store import KIND_DROPOUT, KIND_LOW_THROUGHPUT, DropoutRow, MonitorStore
from steadycast.cli import main
from steadycast.dropouts_cli import (
    UNFINISHED,
    UsageError,
    database_path,
    format_duration,
    format_summary,
    format_table,
    parse_since,
    summarize,
    utc_offset,
)

NOW_S = datetime(2024, 5, 2, 12, 0, tzinfo=UTC).timestamp()
HANOI = timezone(timedelta(hours=7))
T0 = datetime(2024, 5, 1, 8, 0, 0, tzinfo=UTC).timestamp()


def row(id_: int, stream: str, scope: str, kind: str, start_s: float,
        end_s: float | None, cause: str = "no_data") -> DropoutRow:
    return DropoutRow(id_, stream, scope, kind, cause, start_s, end_s,
                      None if end_s is None else end_s - start_s)


ROWS = [
    row(1, "farm1", "ingest", KIND_DROPOUT, T0, T0 + 3.25, "connection_lost"),
    row(2, "farm1", "destination:youtube", KIND_DROPOUT, T0 + 60, T0 + 62),
    row(3, "farm1", "ingest", KIND_DROPOUT, T0 + 3600, T0 + 3600 + 125),
    row(4, "farm2", "ingest", KIND_LOW_THROUGHPUT, T0 + 7200, None, "below_target"),
]


@pytest.mark.parametrize(("text", "ago_s"), [
    ("30m", 1800), ("24h", 86400), ("7d", 7 * 86400), ("90s", 90), ("2w", 14 * 86400),
    ("1.5h", 5400), (" 24H ", 86400),
])
def test_since_durations_count_back_from_now(text: str, ago_s: float) -> None:
    assert parse_since(text, NOW_S) == NOW_S - ago_s


def test_since_dates_are_local_unless_they_carry_a_zone() -> None:
    assert parse_since("2024-05-01", NOW_S, tz=HANOI) == \
        datetime(2024, 5, 1, tzinfo=HANOI).timestamp()
    assert parse_since("2024-05-01T08:30", NOW_S, tz=HANOI) == \
        datetime(2024, 5, 1, 8, 30, tzinfo=HANOI).timestamp()
    assert parse_since("2024-05-01T08:30Z", NOW_S, tz=HANOI) == \
        datetime(2024, 5, 1, 8, 30, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(("text", "why"), [
    ("yesterday", "not a duration or a date"), ("-5m", "not a duration or a date"),
    ("24 hours", "not a duration or a date"), ("2024-13-01", "not a duration or a date"),
    ("", "not a duration or a date"), ("2099-01-01", "in the future"),
])
def test_bad_since_is_a_clear_error(text: str, why: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_since(text, NOW_S)
    assert why in str(info.value) and "30m, 24h, 7d" in str(info.value)


@pytest.mark.parametrize(("seconds", "text"), [
    (0.0, "0.0 s"), (3.25, "3.2 s"), (59.94, "59.9 s"), (60, "1 min 00 s"),
    (125, "2 min 05 s"), (3599.6, "1 h 00 min"), (3720, "1 h 02 min"),
])
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_table_lists_every_row_with_local_times_and_unfinished_ones() -> None:
    lines = format_table(ROWS, tz=HANOI)
    assert lines[0].split() == ["stream", "scope", "kind", "start", "end", "duration", "cause"]
    assert lines[1].split() == ["farm1", "ingest", "dropout", "2024-05-01", "15:00:00",
                                "15:00:03", "3.2", "s", "connection_lost"]
    assert lines[3].split()[-5:] == ["2", "min", "05", "s", "no_data"]
    last = lines[4].split()
    assert last[:3] == ["farm2", "ingest", "low_throughput"]
    assert last[-3:] == [UNFINISHED, "-", "below_target"]
    # columns line up
    assert {line.index("2024-05-01") for line in lines[1:]} == {lines[0].index("start")}
    assert {line.index("s", lines[0].index("duration")) for line in lines[1:4]} == {
        lines[0].index("duration") + len("duration") - 1}


def test_end_on_another_day_shows_its_date() -> None:
    late = datetime(2024, 5, 1, 16, 59, 0, tzinfo=UTC).timestamp()  # 23:59 in Hanoi
    lines = format_table([row(1, "s", "ingest", KIND_DROPOUT, late, late + 120)], tz=HANOI)
    assert "2024-05-02 00:01:00" in lines[1]


def test_summary_per_stream_scope_and_kind() -> None:
    summaries = summarize(ROWS)
    assert [(s.stream, s.scope, s.kind, s.count, s.unfinished) for s in summaries] == [
        ("farm1", "ingest", KIND_DROPOUT, 2, 0),
        ("farm1", "destination:youtube", KIND_DROPOUT, 1, 0),
        ("farm2", "ingest", KIND_LOW_THROUGHPUT, 1, 1),
    ]
    assert summaries[0].total_s == pytest.approx(128.25)
    assert summaries[0].longest_s == pytest.approx(125)
    assert summaries[2].longest_s is None and summaries[2].total_s == 0
    lines = format_summary(summaries)
    assert lines[1].split() == ["farm1", "ingest", "dropout", "2", "2", "min", "08", "s", "2",
                                "min", "05", "s", "0"]
    assert lines[3].split() == ["farm2", "ingest", "low_throughput", "1", "0.0", "s", "-", "1"]


def test_utc_offset_names_the_zone() -> None:
    assert utc_offset(HANOI, T0) == "UTC+07:00"
    assert utc_offset(timezone(timedelta(hours=-3, minutes=-30)), T0) == "UTC-03:30"


def test_config_is_read_for_its_database_without_its_secrets(tmp_path: Path) -> None:
    config = tmp_path / "relay.toml"
    config.write_text('[relay]\nmonitor_db = "data/m.db"\n[streams.farm1]\n'
                      'token = "env:FARM1_TOKEN_NOT_SET_HERE"\n', encoding="utf-8")
    assert database_path(str(config), None) == tmp_path / "data" / "m.db"
    assert database_path(None, str(tmp_path / "x.db")) == tmp_path / "x.db"


def _store_with_rows(path: Path) -> None:
    store = MonitorStore(path)
    a = store.dropout_started("farm1", "ingest", KIND_DROPOUT, "no_data", T0)
    store.dropout_ended(a, T0 + 3.25, "connection_lost")
    store.add_dropout("farm2", "destination:fb", KIND_DROPOUT, "connection_lost", T0 + 10,
                      T0 + 11)
    store.dropout_started("farm1", "ingest", KIND_LOW_THROUGHPUT, "below_target", T0 + 20)
    store.close()


def test_command_prints_table_and_summary(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "m.db"
    _store_with_rows(db)
    assert main(["dropouts", "--db", str(db), "--stream", "farm1", "--utc"]) == 0
    out = capsys.readouterr().out
    assert "Dropouts for stream farm1" in out and "times: UTC" in out
    assert "2024-05-01 08:00:00  08:00:03" in out
    assert "farm2" not in out
    assert UNFINISHED in out and "Summary" in out


def test_command_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "m.db"
    _store_with_rows(db)
    assert main(["dropouts", "--db", str(db), "--json", "--since", "2024-05-01T08:00:05Z"]) == 0
    data = json.loads(capsys.readouterr().out)
    # since 08:00:05: the farm2 dropout (08:00:10) and the one still open
    assert [(d["stream"], d["unfinished"]) for d in data["dropouts"]] == [
        ("farm2", False), ("farm1", True)]
    assert data["dropouts"][0]["start"] == "2024-05-01T08:00:10.000+00:00"
    assert data["dropouts"][0]["duration_s"] == pytest.approx(1.0)
    assert {(s["stream"], s["kind"], s["count"]) for s in data["summary"]} == {
        ("farm2", KIND_DROPOUT, 1), ("farm1", KIND_LOW_THROUGHPUT, 1)}


def test_command_with_nothing_recorded(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "m.db"
    MonitorStore(db).close()
    assert main(["dropouts", "--db", str(db), "--since", "24h"]) == 0
    assert "no dropouts kept for all streams since" in capsys.readouterr().out


def test_command_limit_shows_the_newest(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "m.db"
    _store_with_rows(db)
    assert main(["dropouts", "--db", str(db), "--limit", "1"]) == 0
    out = capsys.readouterr().out
    assert "the newest 1 of 3" in out
    table = out.split("Summary")[0]
    assert "low_throughput" in table and "farm2" not in table


def test_missing_database_says_where_it_looked(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "relay.toml"
    config.write_text("[relay]\n", encoding="utf-8")
    assert main(["dropouts", "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert f"no monitor database at {tmp_path / 'monitor.db'}" in err
    assert "has the relay run with this config?" in err
    assert not (tmp_path / "monitor.db").exists()  # looking does not create it


def test_unreadable_database_and_bad_config_are_clear_errors(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database" * 200)
    assert main(["dropouts", "--db", str(junk)]) == 1
    assert "cannot read the monitor database" in capsys.readouterr().err
    assert main(["dropouts", "--db", str(tmp_path)]) == 1
    assert "is not a file" in capsys.readouterr().err
    config = tmp_path / "bad.toml"
    config.write_text("[relay]\ngrace_s = 'x'\n", encoding="utf-8")
    assert main(["dropouts", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "bad config" in err and "relay.grace_s" in err


def test_config_and_db_are_exclusive(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["dropouts", "--config", "a.toml", "--db", "b.db"])
    assert info.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err
