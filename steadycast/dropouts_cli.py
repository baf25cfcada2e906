"""``steadycast dropouts``: the dropout history the relay kept in its monitor database.

    steadycast dropouts [--stream S] [--since 24h] [--config FILE | --db PATH] [--json]

Reads ``[relay] monitor_db`` (from ``--config``, or the embedded default config's
``monitor.db`` in the current directory, or ``--db``) and prints every dropout and
low-throughput episode as a table, then a summary per stream, scope and kind (count, total
and longest duration). The database may be read while the relay runs.

The logic lives in plain functions (``parse_since``, ``format_table``, ``summarize``,
``format_summary``); ``cmd_dropouts`` only parses, calls them and turns errors into one line
on stderr: exit code 2 for bad arguments or config, 1 for a missing or unreadable database.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any

from monitor.store import DropoutRow, MonitorStore, StoreError
from monitor.validate import parse_duration_s
from steadycast.argtypes import positive_int

EXIT_OK = 0
EXIT_NO_DB = 1
EXIT_USAGE = 2
LIMIT_DEFAULT = 100  # table rows (the newest); the summary counts every row
UNFINISHED = "unfinished"  # end of a row still open: ongoing, or the relay died during it

SINCE_VALID = "a duration back from now (90s, 30m, 24h, 7d, 2w) or a date or time " \
              "(2024-05-01, 2024-05-01T08:00, local time unless it ends in Z or +07:00)"

EXAMPLES = """\
examples:
  steadycast dropouts --config relay.toml              every dropout the relay kept
  steadycast dropouts --config relay.toml --since 24h  the last day
  steadycast dropouts --db /srv/steadycast/monitor.db --stream farm1 --since 2024-05-01
  steadycast dropouts --config relay.toml --since 7d --json > dropouts.json

kinds: dropout (no media for [relay] dropout_ms, or the connection lost, until media flows
again) and low_throughput (media below low_throughput_share of the stream's bitrate for
low_throughput_s). scope: ingest (the sender's uplink) or destination:NAME (the relay's
push to that platform). A row whose end reads "unfinished" is still open: the dropout is
going on, or the relay stopped without closing it (a crash); see docs/monitor.md.
"""


class UsageError(Exception):
    """A bad argument; the message names it and what would be valid."""


# --- plain functions ------------------------------------------------------------------------
def parse_since(text: str, now_s: float, tz: tzinfo | None = None) -> float:
    """``--since`` as Unix seconds: a duration back from ``now_s`` or an ISO date/time
    (naive ones in ``tz``, default the local time zone). Raises UsageError."""
    value = text.strip()
    duration_s = parse_duration_s(value)
    if duration_s is not None:
        return now_s - duration_s
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise UsageError(f"--since {text!r} is not a duration or a date; valid: "
                         f"{SINCE_VALID}") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=tz) if tz is not None else when.astimezone()
    since_s = when.timestamp()
    if since_s > now_s:
        raise UsageError(f"--since {text!r} is in the future; valid: {SINCE_VALID}")
    return since_s


def format_duration(seconds: float) -> str:
    """3.2 s, 2 min 05 s, 1 h 02 min."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = int(round(seconds))
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    return f"{whole // 3600} h {whole % 3600 // 60:02d} min"


def _local(unix_s: float, tz: tzinfo | None) -> datetime:
    return datetime.fromtimestamp(unix_s, tz) if tz is not None else \
        datetime.fromtimestamp(unix_s).astimezone()


def utc_offset(tz: tzinfo | None, at_s: float | None = None) -> str:
    """``UTC+07:00`` for the zone the table's times are in."""
    when = _local(time.time() if at_s is None else at_s, tz)
    offset = when.utcoffset() or timedelta(0)
    sign = "-" if offset < timedelta(0) else "+"
    minutes = abs(int(offset.total_seconds())) // 60
    return f"UTC{sign}{minutes // 60:02d}:{minutes % 60:02d}"


def _columns(header: Sequence[str], rows: Sequence[Sequence[str]],
             right: frozenset[int] = frozenset()) -> Iterator[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, *rows]:
        cells = [c.rjust(w) if i in right else c.ljust(w)
                 for i, (c, w) in enumerate(zip(r, widths, strict=True))]
        yield "  ".join(cells).rstrip()


def format_table(rows: Sequence[DropoutRow], tz: tzinfo | None = None) -> list[str]:
    """One line per dropout: stream, scope, kind, start, end (time only when on the start's
    day), duration, cause; times in ``tz`` (default: local)."""
    cells: list[list[str]] = []
    for r in rows:
        start = _local(r.start_s, tz)
        if r.end_s is None:
            end_text, duration_text = UNFINISHED, "-"
        else:
            end = _local(r.end_s, tz)
            end_text = end.strftime("%H:%M:%S" if end.date() == start.date()
                                    else "%Y-%m-%d %H:%M:%S")
            duration_text = format_duration(r.duration_s if r.duration_s is not None
                                            else r.end_s - r.start_s)
        cells.append([r.stream, r.scope, r.kind, start.strftime("%Y-%m-%d %H:%M:%S"), end_text,
                      duration_text, r.cause])
    header = ["stream", "scope", "kind", "start", "end", "duration", "cause"]
    return list(_columns(header, cells, right=frozenset({5})))


@dataclass(frozen=True)
class Summary:
    stream: str
    scope: str
    kind: str
    count: int
    total_s: float  # finished rows only
    longest_s: float | None  # None when none has finished
    unfinished: int

    def as_dict(self) -> dict[str, Any]:
        return {"stream": self.stream, "scope": self.scope, "kind": self.kind,
                "count": self.count, "total_s": round(self.total_s, 3),
                "longest_s": None if self.longest_s is None else round(self.longest_s, 3),
                "unfinished": self.unfinished}


def _scope_order(scope: str) -> tuple[int, str]:
    return (0 if scope == "ingest" else 1, scope)


def summarize(rows: Sequence[DropoutRow]) -> list[Summary]:
    """Count, total and longest duration per stream, scope and kind (ingest first)."""
    groups: dict[tuple[str, str, str], list[DropoutRow]] = {}
    for r in rows:
        groups.setdefault((r.stream, r.scope, r.kind), []).append(r)
    out: list[Summary] = []
    for (stream, scope, kind), group in sorted(
            groups.items(), key=lambda kv: (kv[0][0], _scope_order(kv[0][1]), kv[0][2])):
        done = [r.duration_s if r.duration_s is not None else r.end_s - r.start_s
                for r in group if r.end_s is not None]
        out.append(Summary(stream, scope, kind, len(group), sum(done),
                           max(done) if done else None, len(group) - len(done)))
    return out


def format_summary(summaries: Sequence[Summary]) -> list[str]:
    header = ["stream", "scope", "kind", "count", "total", "longest", "unfinished"]
    cells = [[s.stream, s.scope, s.kind, str(s.count), format_duration(s.total_s),
              "-" if s.longest_s is None else format_duration(s.longest_s), str(s.unfinished)]
             for s in summaries]
    return list(_columns(header, cells, right=frozenset({3, 4, 5, 6})))


def _iso(unix_s: float | None) -> str | None:
    if unix_s is None:
        return None
    return datetime.fromtimestamp(unix_s, UTC).isoformat(timespec="milliseconds")


def as_json(db: Path, since_s: float | None, stream: str | None,
            rows: Sequence[DropoutRow]) -> dict[str, Any]:
    """Every row (times as Unix seconds and ISO 8601 UTC) and the summary."""
    return {
        "db": str(db),
        "stream": stream,
        "since_s": since_s,
        "since": _iso(since_s),
        "dropouts": [{**r.as_dict(), "start": _iso(r.start_s), "end": _iso(r.end_s),
                      "unfinished": r.end_s is None} for r in rows],
        "summary": [s.as_dict() for s in summarize(rows)],
    }


class _AnySecret(Mapping[str, str]):
    """An environment in which every variable is set: the config is read for its paths only,
    and none of its secrets is needed (or read) for that."""

    VALUE = "not-a-secret-placeholder"

    def __getitem__(self, key: str) -> str:
        return self.VALUE

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


def database_path(config: str | None, db: str | None) -> Path:
    """``--db``, else the ``monitor_db`` of ``--config`` (or of the embedded default)."""
    if db is not None:
        return Path(db).expanduser()
    from steadycast.config import ConfigError, load_relay_config

    try:
        settings = load_relay_config(Path(config).expanduser() if config else None,
                                     env=_AnySecret())
    except ConfigError as exc:
        raise UsageError(f"bad config:\n{exc}") from None
    return settings.monitor_db


# --- the command ----------------------------------------------------------------------------
def _fail(message: str, code: int) -> int:
    print(f"steadycast dropouts: {message}", file=sys.stderr)
    return code


def cmd_dropouts(args: argparse.Namespace) -> int:
    now_s = time.time()
    try:
        since_s = parse_since(args.since, now_s) if args.since else None
        db = database_path(args.config, args.db)
    except UsageError as exc:
        return _fail(str(exc), EXIT_USAGE)
    hint = "has the relay run with this config?" if args.db is None else \
        "is the path right? it is [relay] monitor_db in the relay's config"
    if not db.exists():
        return _fail(f"no monitor database at {db}: {hint}", EXIT_NO_DB)
    if not db.is_file():
        return _fail(f"{db} is not a file: the monitor database is one SQLite file", EXIT_NO_DB)
    try:
        store = MonitorStore(db)
    except StoreError as exc:
        return _fail(f"cannot read the monitor database: {exc}", EXIT_NO_DB)
    try:
        rows = store.dropouts(stream=args.stream, since_s=since_s)
    except sqlite3.Error as exc:  # a damaged file
        return _fail(f"cannot read the monitor database {db}: {exc}", EXIT_NO_DB)
    finally:
        store.close()

    if args.json:
        json.dump(as_json(db, since_s, args.stream, rows), sys.stdout, ensure_ascii=False,
                  indent=2)
        print()
        return EXIT_OK
    tz = UTC if args.utc else None
    what = f"stream {args.stream}" if args.stream else "all streams"
    since_text = "" if since_s is None else f" since {_local(since_s, tz):%Y-%m-%d %H:%M:%S}"
    if not rows:
        print(f"no dropouts kept for {what}{since_text} in {db}")
        return EXIT_OK
    zone = "UTC" if args.utc else f"local time, {utc_offset(None)}"
    print(f"Dropouts for {what}{since_text} in {db} (times: {zone})")
    shown = rows[-args.limit:]
    if len(shown) < len(rows):
        print(f"(the newest {len(shown)} of {len(rows)}; --limit N shows more)")
    print()
    for line in format_table(shown, tz):
        print(line)
    print()
    print(f"Summary ({len(rows)} row(s); totals and longest count finished rows only)")
    for line in format_summary(summarize(rows)):
        print(line)
    return EXIT_OK


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``dropouts`` to ``sub``."""
    p = sub.add_parser(
        "dropouts", help="list the dropouts the relay kept (history and a summary per stream)",
        description="Print the dropout history the relay keeps in its monitor database\n"
                    "([relay] monitor_db, SQLite; kept across restarts): one line per dropout\n"
                    "or low-throughput episode with its stream, scope, kind, start, end,\n"
                    "duration and cause, then a summary per stream (count, total and longest\n"
                    "duration). Safe to run while the relay runs.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EXAMPLES)
    p.add_argument("--stream", metavar="S", help="only this stream (default: all)")
    p.add_argument("--since", metavar="WHEN",
                   help="only dropouts since WHEN (and any still open): 30m, 24h, 7d, or a "
                        "date/time such as 2024-05-01 or 2024-05-01T08:00 (local time); "
                        "default: all")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--config", metavar="FILE",
                       help="the relay's config; its [relay] monitor_db is read (default: the "
                            "embedded default config, i.e. ./monitor.db); no secrets needed")
    where.add_argument("--db", metavar="PATH", help="the monitor database file itself")
    p.add_argument("--json", action="store_true",
                   help="print JSON (rows with Unix and ISO 8601 UTC times, and the summary) "
                        "instead of tables")
    p.add_argument("--utc", action="store_true", help="show times in UTC, not local time")
    p.add_argument("--limit", type=positive_int, default=LIMIT_DEFAULT, metavar="N",
                   help="table rows, the newest (default %(default)s); the summary and --json "
                        "cover every row")
    p.set_defaults(func=cmd_dropouts)
