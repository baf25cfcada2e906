"""``steadycast bench`` and its report: tables and numbers from synthetic results, the plot,
the command's argument errors, and one short end-to-end simulated run."""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import re
from pathlib import Path
from typing import Any

import pytest

from benchmarks.bench import trace_seed
from benchmarks.report import (
    excess_interruption_s,
    plot_file_name,
    plot_run,
    render_report,
    summarize,
    summary_table,
    winners,
    write_report,
)
from benchmarks.results import RunResult, read_results
from steadycast.bench_cli import add_parser

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def make_result(**changes: Any) -> RunResult:
    """A plausible 60 s simulated run; ``changes`` override any field."""
    n = 60
    fields: dict[str, Any] = {
        "trace": "hill", "abr": "steady", "mode": "sim", "duration_s": 60.0,
        "buffer_ms": 5000, "capacity_kbps_mean": 800.0, "sent_kbps_mean": 700.0,
        "delivered_kbps_mean": 680.0, "utilization": 0.85,
        "outages": [[10.0, 8.0], [40.0, 2.0]], "unavoidable_interruption_s": 3.0,
        "interruption_s": 4.0, "platform_sessions": 1, "latency_ms_p50": 5200.0,
        "latency_ms_p95": 5900.0, "bitrate_switches": 12, "frames_captured": 1800,
        "frames_live": 1700, "frames_archived": 1800, "score": 0.5,
        "series": {
            "t_s": [float(i) for i in range(n)],
            "capacity_kbps": [0.0 if 10 <= i < 18 else 800.0 for i in range(n)],
            "target_kbps": [600.0] * n,
            "delivered_kbps": [0.0 if 10 <= i < 18 else 680.0 for i in range(n)],
            "relay_buffer_ms": [5000.0 - (400.0 * (i - 10) if 10 <= i < 18 else 0.0)
                                for i in range(n)],
            "outage": [1.0 if 10 <= i < 18 else 0.0 for i in range(n)],
        },
        "notes": "synthetic",
    }
    fields.update(changes)
    return RunResult(**fields)


def table_row(text: str, label: str) -> list[str]:
    """The cells of the first Markdown table row whose first cell is ``label``."""
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0] == label:
            return cells
    raise AssertionError(f"no row {label!r} in:\n{text}")


# --- the report's numbers -------------------------------------------------------------------
def test_trace_table_shows_interruption_against_the_oracle_and_excess_per_outage() -> None:
    results = [
        make_result(abr="steady", interruption_s=4.0, unavoidable_interruption_s=3.0),
        make_result(abr="fixed", interruption_s=13.0, unavoidable_interruption_s=3.0,
                    latency_ms_p50=None, latency_ms_p95=None, score=-2.0),
    ]
    text = render_report(results, title="bench", command_line="steadycast bench ...")
    steady = table_row(text, "steady")
    fixed = table_row(text, "fixed")
    # controller, util, delivered, capacity, interruption, unavoidable, excess, excess/outage
    assert steady[1:8] == ["0.85", "680", "800", "4.0", "3.0", "1.0", "0.50"]
    assert fixed[4:8] == ["13.0", "3.0", "10.0", "5.00"]
    # floor bound, over floor: "–" for a run without a floor bound (older results files)
    assert steady[8:10] == ["–", "–"]
    # sessions, latency, switches, frames live/captured, archived, score
    assert steady[10:] == ["1", "5200/5900", "12", "1700/1800", "1800", "0.50"]
    assert fixed[11] == "–"  # no latency measured
    assert "## hill" in text
    assert "2 outage(s)" in text and "longest 8.0 s" in text


def test_floor_bound_and_what_the_run_lost_beyond_it_are_shown_and_totalled() -> None:
    results = [
        make_result(trace="a", interruption_s=9.0, unavoidable_interruption_s=3.0,
                    floor_kbps=214.0, floor_bound_interruption_s=7.5),
        make_result(trace="b", interruption_s=4.0, unavoidable_interruption_s=3.0,
                    floor_kbps=214.0, floor_bound_interruption_s=4.2),
    ]
    text = render_report(results, title="t", command_line="c")
    first = table_row(text[text.index("## a"):], "steady")
    second = table_row(text[text.index("## b"):], "steady")
    assert first[8:10] == ["7.5", "1.5"]
    assert second[8:10] == ["4.2", "0.0"]  # under the bound is rounding, never negative
    (summary,) = summarize(results)
    assert summary.over_floor_s == pytest.approx(1.5)
    assert summarize([results[0], make_result(trace="c")])[0].over_floor_s is None
    assert "*floor bound*" in text


def test_results_files_written_before_the_floor_bound_still_read(tmp_path: Path) -> None:
    data = make_result().to_dict()
    del data["floor_kbps"], data["floor_bound_interruption_s"]
    path = tmp_path / "results.json"
    path.write_text(json.dumps([data]), encoding="utf-8")
    (back,) = read_results(path)
    assert back.floor_bound_interruption_s is None and back.floor_kbps is None


def test_excess_is_never_below_zero_and_undefined_without_outages() -> None:
    under = make_result(interruption_s=2.9, unavoidable_interruption_s=3.0)
    assert excess_interruption_s(under) == 0.0
    text = render_report([make_result(outages=[], unavoidable_interruption_s=0.0,
                                      interruption_s=1.5)], title="t", command_line="c")
    assert table_row(text, "steady")[6:8] == ["1.5", "–"]


def test_summary_across_traces_averages_utilization_and_score_and_totals_the_rest() -> None:
    results = [
        make_result(trace="a", abr="steady", utilization=0.9, interruption_s=5.0,
                    unavoidable_interruption_s=3.0, platform_sessions=1, score=1.0),
        make_result(trace="a", abr="obs", utilization=0.7, interruption_s=9.0,
                    unavoidable_interruption_s=3.0, platform_sessions=2, score=0.2),
        make_result(trace="b", abr="steady", utilization=0.8, interruption_s=1.0,
                    unavoidable_interruption_s=0.0, platform_sessions=1, score=0.0),
        make_result(trace="b", abr="obs", utilization=0.9, interruption_s=2.0,
                    unavoidable_interruption_s=0.0, platform_sessions=3, score=0.4),
    ]
    by_label = {s.label: s for s in summarize(results)}
    assert by_label["steady"].mean_utilization == pytest.approx(0.85)
    assert by_label["steady"].excess_interruption_s == pytest.approx(3.0)
    assert by_label["obs"].excess_interruption_s == pytest.approx(8.0)
    assert by_label["obs"].platform_sessions == 5
    assert by_label["steady"].mean_score == pytest.approx(0.5)
    assert by_label["obs"].mean_score == pytest.approx(0.3)
    assert winners(results) == ["steady"]

    text = render_report(results, title="t", command_line="c")
    summary = text[text.index("## Summary across traces"):]
    assert table_row(summary, "steady") == ["steady", "2", "0.85", "3.0", "–", "2", "0.50"]
    assert table_row(summary, "obs") == ["obs", "2", "0.80", "8.0", "–", "5", "0.30"]
    assert "winner by mean score: steady (0.50)" in summary
    assert text.index("## a") < text.index("## b") < text.index("## Summary")


def test_equal_scores_share_the_win() -> None:
    results = [make_result(abr="steady", score=0.7), make_result(abr="gcc", score=0.7),
               make_result(abr="fixed", score=0.1)]
    assert sorted(winners(results)) == ["gcc", "steady"]
    assert "tie by mean score (0.70): " in render_report(results, title="t", command_line="c")


def test_report_says_how_it_was_run_and_how_to_read_the_score(tmp_path: Path) -> None:
    path = write_report(tmp_path / "report.md", [make_result()], title="bench of the hill",
                        command_line="steadycast bench --trace hill.csv --out x",
                        settings={"outage spec": "12:3", "seed": 7, "scale": "x0.5"})
    text = path.read_text(encoding="utf-8")
    assert text.startswith("# bench of the hill\n")
    assert "steadycast bench --trace hill.csv --out x" in text
    for line in ("- relay buffer D: 5000 ms", "- outage spec: 12:3", "- seed: 7",
                 "- scale: x0.5", "- date: "):
        assert line in text
    # the score's formula comes from benchmarks.results' own documentation
    assert "4.3 * interruption_s / chunks" in text
    assert "max(0, L - D)" in text


def test_results_mixing_modes_label_controllers_with_their_mode() -> None:
    results = [make_result(abr="steady", mode="sim"), make_result(abr="steady", mode="real")]
    labels = [s.label for s in summarize(results)]
    assert sorted(labels) == ["steady (real)", "steady (sim)"]


def test_terminal_summary_lists_every_run_and_names_the_winner() -> None:
    results = [make_result(trace="norway_bus_1 x0.5", abr="steady", score=0.9),
               make_result(trace="norway_bus_1 x0.5", abr="belacoder", score=0.3)]
    text = summary_table(results)
    lines = text.splitlines()
    rows = [re.split(r"\s{2,}", line) for line in lines]
    assert rows[0][:3] == ["trace", "controller", "util"]
    assert ["norway_bus_1 x0.5", "steady", "0.85"] in [row[:3] for row in rows]
    assert ["norway_bus_1 x0.5", "belacoder", "0.85"] in [row[:3] for row in rows]
    assert len({len(line) for line in lines[:4]}) == 1  # aligned columns
    assert "|" not in text
    assert lines[-1] == "winner by mean score: steady (0.90)"


# --- the plot -------------------------------------------------------------------------------
def test_plot_run_writes_a_png_named_after_trace_abr_and_mode(tmp_path: Path) -> None:
    result = make_result(trace="norway_bus_1 x0.5", abr="gcc")
    assert plot_file_name(result) == "norway_bus_1_x0.5-gcc-sim.png"
    path = plot_run(tmp_path / plot_file_name(result), result)
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC)
    assert len(data) > 10_000  # lines, shading and labels, not an empty canvas


def test_plot_run_copes_with_a_run_that_has_no_series(tmp_path: Path) -> None:
    result = make_result(series={}, outages=[])
    assert plot_run(tmp_path / "empty.png", result).read_bytes().startswith(PNG_MAGIC)


# --- the command: argument errors -----------------------------------------------------------
def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="steadycast")
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


@pytest.fixture
def small_trace(tmp_path: Path) -> Path:
    """A 30 s csv trace between 300 and 900 kbit/s."""
    path = tmp_path / "hill.csv"
    rates = [600, 900, 700, 300, 500, 800]
    path.write_text("seconds,kbps\n" + "".join(f"{5 * i},{r}\n" for i, r in enumerate(rates)),
                    encoding="utf-8")
    return path


def assert_usage_error(capsys: pytest.CaptureFixture[str], code: int, *needles: str) -> None:
    err = capsys.readouterr().err
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("steadycast bench: ")
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0]


def test_unknown_controller_is_a_usage_error_naming_it_and_the_choices(
        small_trace: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = run_cli(["bench", "--trace", str(small_trace), "--abr", "steady,turbo",
                    "--out", str(tmp_path / "out")])
    assert_usage_error(capsys, code, "'turbo'", "steady", "belacoder", "gcc")
    assert not (tmp_path / "out").exists()


def test_direct_rtmp_is_refused_in_sim_mode(small_trace: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    code = run_cli(["bench", "--trace", str(small_trace), "--abr", "direct-rtmp",
                    "--out", str(tmp_path / "out")])
    assert_usage_error(capsys, code, "direct-rtmp", "--mode real")


def test_missing_trace_file_is_a_usage_error(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nowhere.up"
    code = run_cli(["bench", "--trace", str(missing), "--out", str(tmp_path / "out")])
    assert_usage_error(capsys, code, "cannot read", str(missing))


def test_malformed_trace_is_a_usage_error_naming_file_and_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("seconds,kbps\n0,500\n1,fast\n", encoding="utf-8")
    code = run_cli(["bench", "--trace", str(bad), "--out", str(tmp_path / "out")])
    assert_usage_error(capsys, code, f"{bad}:3:")


def test_bad_outage_spec_is_a_usage_error(small_trace: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    code = run_cli(["bench", "--trace", str(small_trace), "--outages", "10:5,12:3",
                    "--out", str(tmp_path / "out")])
    assert_usage_error(capsys, code, "outage spec", "overlap")


@pytest.mark.skipif(importlib.util.find_spec("benchmarks.real") is not None,
                    reason="benchmarks/real.py exists: real mode is available")
def test_real_mode_without_its_runner_says_it_is_not_available(
        small_trace: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = run_cli(["bench", "--trace", str(small_trace), "--mode", "real",
                    "--out", str(tmp_path / "out")])
    assert_usage_error(capsys, code, "real mode is not available")


def test_two_traces_with_one_name_are_refused(small_trace: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    other = tmp_path / "elsewhere" / "hill.csv"
    other.parent.mkdir()
    other.write_bytes(small_trace.read_bytes())
    code = run_cli(["bench", "--trace", str(small_trace), "--trace", str(other),
                    "--out", str(tmp_path / "out")])
    assert_usage_error(capsys, code, "both named 'hill'")


def test_outage_seed_depends_on_the_trace_name_and_seed_not_the_order() -> None:
    assert trace_seed(0, "norway_bus_1") == trace_seed(0, "norway_bus_1")
    assert trace_seed(0, "norway_bus_1") != trace_seed(0, "norway_bus_3")
    assert trace_seed(0, "norway_bus_1") != trace_seed(1, "norway_bus_1")


# --- the command: one short simulated bench -------------------------------------------------
@pytest.mark.skipif(importlib.util.find_spec("benchmarks.sim") is None,
                    reason="benchmarks/sim.py is not there yet")
def test_bench_sim_writes_results_report_and_plots_for_each_controller(
        small_trace: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    code = run_cli(["bench", "--trace", str(small_trace), "--abr", "steady,fixed",
                    "--mode", "sim", "--duration", "30", "--outages", "12:7",
                    "--scale", "0.8", "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err

    # progress: a start and an end line per run
    assert "[1/2] hill x0.8 · steady · sim …" in captured.err
    assert "[2/2] hill x0.8 · fixed · sim … done in " in captured.err
    assert "utilization" in captured.err and "(unavoidable " in captured.err

    raw = json.loads((out / "results.json").read_text(encoding="utf-8"))
    keys = {f.name for f in dataclasses.fields(RunResult)}
    assert [set(run) for run in raw] == [keys, keys]
    results = read_results(out / "results.json")
    assert [(r.trace, r.abr, r.mode) for r in results] == [("hill x0.8", "steady", "sim"),
                                                           ("hill x0.8", "fixed", "sim")]
    # every controller met the same link: the same capacity and the same outages
    assert results[0].capacity_kbps_mean == results[1].capacity_kbps_mean
    assert results[0].outages == results[1].outages
    assert any(start <= 12.0 and start + length >= 19.0 for start, length in results[0].outages)
    assert results[0].unavoidable_interruption_s == pytest.approx(2.0, abs=0.2)

    report = (out / "report.md").read_text(encoding="utf-8")
    assert table_row(report, "steady") and table_row(report, "fixed")
    assert "--outages 12:7" in report and "--duration 30" in report
    for r in results:
        assert (out / plot_file_name(r)).read_bytes().startswith(PNG_MAGIC)

    assert "winner by mean score: " in captured.out
    assert f"wrote {out / 'results.json'}" in captured.out


@pytest.mark.skipif(importlib.util.find_spec("benchmarks.sim") is None,
                    reason="benchmarks/sim.py is not there yet")
def test_bench_sim_in_a_process_pool_gives_the_same_results_in_the_same_order(
        small_trace: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["bench", "--trace", str(small_trace), "--abr", "gcc,steady", "--duration", "20",
            "--outages", "default", "--seed", "3"]
    assert run_cli([*argv, "--out", str(tmp_path / "one")]) == 0
    assert run_cli([*argv, "--jobs", "2", "--out", str(tmp_path / "two")]) == 0
    capsys.readouterr()
    one = read_results(tmp_path / "one" / "results.json")
    two = read_results(tmp_path / "two" / "results.json")
    assert [r.abr for r in two] == ["gcc", "steady"]
    assert one == two
