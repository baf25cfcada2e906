"""``steadycast trace stats|plot``, driven in-process through ``add_parser``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from linklab.traces import load_trace
from steadycast.trace_cli import add_parser, trace_stats

ATT = Path(__file__).resolve().parents[3] / "shared" / "traces" / "mahimahi" / "ATT-LTE-driving.up"
needs_shared = pytest.mark.skipif(not ATT.exists(), reason="shared traces not present")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="steadycast")
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


@needs_shared
def test_stats_prints_a_readable_table_for_the_att_trace(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["trace", "stats", str(ATT)]) == 0
    out = capsys.readouterr().out
    assert "ATT-LTE-driving" in out
    assert "period         1012.472 s" in out
    assert "mean           833.6 kbit/s" in out
    assert "zero capacity  94 s" in out
    for key in ("p5", "p10", "p25", "p50", "p75", "p90", "p95"):
        assert key in out
    assert "longest 78.3 s" in out


@needs_shared
def test_stats_json_has_the_same_figures(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["trace", "stats", str(ATT), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["name"] == "ATT-LTE-driving"
    assert stats["duration_s"] == pytest.approx(1012.472)
    assert stats["mean_kbps"] == pytest.approx(833.6, abs=0.1)
    assert stats["zero_capacity_s"] == 94
    pct = stats["capacity_percentiles_kbps"]
    assert list(pct) == ["p5", "p10", "p25", "p50", "p75", "p90", "p95"]
    assert list(pct.values()) == sorted(pct.values())
    assert stats["outages"]["longest_s"] == pytest.approx(78.319)
    assert stats["outages"]["count"] == len(stats["outages"]["list"])
    assert stats["overlay_outages"]["count"] == 0
    assert stats == json.loads(json.dumps(trace_stats(load_trace(ATT), 1012.472)))


@needs_shared
def test_stats_with_scale_and_seeded_outage_overlay(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["trace", "stats", str(ATT), "--scale", "0.5", "--outages", "default",
            "--seed", "5", "--duration", "1800", "--json"]
    assert run(argv) == 0
    first = json.loads(capsys.readouterr().out)
    assert run(argv) == 0
    assert json.loads(capsys.readouterr().out) == first
    assert first["name"] == "ATT-LTE-driving x0.5"
    assert first["duration_s"] == 1800
    assert first["mean_kbps"] < 0.5 * 833.6
    assert first["overlay_outages"]["count"] > 0
    assert first["outages"]["total_s"] >= first["overlay_outages"]["total_s"] * 0.9


def test_stats_of_a_small_csv_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "hill.csv"
    path.write_text("seconds,kbps\n0,1200\n1,0\n2,2400\n")
    assert run(["trace", "stats", str(path), "--outages", "0.2:0.5", "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["duration_s"] == 3
    assert stats["zero_capacity_s"] == 1
    assert stats["overlay_outages"]["list"] == [{"start_s": 0.2, "length_s": 0.5}]


@needs_shared
def test_plot_writes_a_png(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    png = tmp_path / "att.png"
    argv = ["trace", "plot", str(ATT), "-o", str(png), "--outages", "default", "--bin", "2"]
    assert run(argv) == 0
    assert png.read_bytes().startswith(PNG_MAGIC)
    assert str(png) in capsys.readouterr().out


def test_bad_file_exits_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "broken.up"
    path.write_text("10\n20\n15\n")
    assert run(["trace", "stats", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"{path}:3: timestamp 15 is before the previous one" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(("argv_tail", "message"), [
    (["--outages", "random:gap=0"], "gap=0 must be > 0"),
    (["--format", "csv"], "mixed formats"),
])
def test_bad_options_exit_2_with_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], argv_tail: list[str],
        message: str) -> None:
    path = tmp_path / "ok.up"
    path.write_text("10\n20\n")
    assert run(["trace", "stats", str(path), *argv_tail]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


def test_missing_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    png = tmp_path / "x.png"
    assert run(["trace", "plot", str(tmp_path / "nope.up"), "-o", str(png)]) == 2
    err = capsys.readouterr().err
    missing = tmp_path / "nope.up"
    assert err == f"steadycast trace: cannot use {missing}: No such file or directory\n"
    assert not png.exists()


def test_help_explains_the_formats(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        run(["trace", "stats", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for word in ("mahimahi", "cooked", "csv", "seconds,kbps", "START:LENGTH", "--outages"):
        assert word in out
