"""The sim-vs-real check's arithmetic: tolerances scale with the run, and bad arguments are
refused before anything runs (the runs themselves are a benchmark, not a test)."""

from __future__ import annotations

import pytest

from benchmarks.sim_vs_real import agreement, main
from tests.unit.test_bench_report import make_result


def test_agreement_holds_within_the_tolerances_and_scales_with_the_duration() -> None:
    real = make_result(utilization=0.78, interruption_s=13.9, duration_s=300.0)
    assert agreement(0.839, 15.3, real) == (True, True, 2.0)
    assert agreement(0.889, 15.3, real)[0] is False  # 0.109 apart
    assert agreement(0.839, 16.0, real)[1] is False  # 2.1 s apart
    short = make_result(utilization=0.78, interruption_s=1.0, duration_s=150.0)
    assert agreement(0.78, 1.9, short) == (True, True, 1.0)
    assert agreement(0.78, 2.1, short)[1] is False


def test_sim_seeds_below_one_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--trace", "any.up", "--sim-seeds", "0"]) == 2
    assert "--sim-seeds 0 must be at least 1" in capsys.readouterr().err
