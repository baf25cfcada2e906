"""The `steady` controller against scripted links: capacity drop, outage, recovery."""

from __future__ import annotations

import statistics

from encoder.abr import AbrLimits, create
from encoder.abr.steady import HEADROOM, OUTAGE_SHARE, SteadyController
from tests.abr_script import run, steps

LIMITS = AbrLimits(min_kbps=150, max_kbps=2500, start_kbps=1000)
AUDIO_KBPS = 64


def test_registered_by_name() -> None:
    assert isinstance(create("steady", LIMITS), SteadyController)


def test_capacity_below_start_backs_off_fast_and_settles_below_capacity() -> None:
    tr = run(create("steady", LIMITS), steps((60, 600)), 60)
    assert max(tr.between(3, 30)) + AUDIO_KBPS <= 600  # below the link within 3 s
    # later probes past the ceiling are small (PROBE_STEP_FAR) and quickly undone
    assert max(tr.between(30, 60)) + AUDIO_KBPS <= 1.15 * 600
    settled = tr.between(20, 60)
    assert min(settled) + AUDIO_KBPS >= 0.75 * 600  # and uses most of it
    assert max(tr.backlog_ms[300:]) < 1500  # no standing queue


def test_steady_link_does_not_oscillate() -> None:
    tr = run(create("steady", LIMITS), steps((200, 1500)), 200)
    late = list(zip(tr.t, tr.kbps, strict=True))[600:]
    backoffs: list[float] = []
    for (_, a), (t, b) in zip(late, late[1:], strict=False):
        if b < 0.95 * a and (not backoffs or t - backoffs[-1] > 2.0):
            backoffs.append(t)
    # at most one careful re-probe past the known ceiling per CEILING_FORGET_S (30 s)
    assert len(backoffs) <= 140 / 30 + 1, backoffs
    kbps = [k for _, k in late]
    assert statistics.pstdev(kbps) < 0.06 * statistics.mean(kbps)
    assert statistics.mean(kbps) + AUDIO_KBPS > 0.88 * 1500
    assert max(kbps) + AUDIO_KBPS < 1.1 * 1500  # re-probes overshoot a little, briefly
    assert max(tr.backlog_ms[600:]) < 600  # and never build a real queue


def test_outage_drops_to_floor_and_estimate_survives_it() -> None:
    c = SteadyController(LIMITS)
    tr = run(c, steps((40, 1200), (8, 0), (40, 1200)), 88)
    before = tr.at(39.9)
    assert before + AUDIO_KBPS > 0.8 * 1200
    # fast backoff once ACKs stop, to a share of the link estimate
    assert tr.at(41.5) <= max(LIMITS.min_kbps, OUTAGE_SHARE * 1200 * 1.05)
    assert all(s == "outage" for s in tr.states[415:480])
    estimate = c.estimate_kbps
    assert estimate is not None and estimate > 1000  # the outage did not erase the estimate
    # recovery: not from the floor: most of the old rate within 5 s of the link's return
    assert tr.at(53) >= 0.55 * before
    assert tr.at(62) >= 0.85 * before


def test_short_gap_does_not_count_as_outage() -> None:
    # a 0.4 s hiccup: ACKs pause less than STALL_S, the bitrate barely moves
    tr = run(create("steady", LIMITS), steps((30, 1200), (0.4, 0), (20, 1200)), 50)
    before = tr.at(29.9)
    assert min(tr.between(30, 50)) >= 0.6 * before
    assert "outage" not in tr.states[295:320]


def test_disconnected_transport_is_an_outage() -> None:
    tr = run(create("steady", LIMITS), steps((60, 1200)), 40,
             connected=lambda t: not 20 <= t < 25)
    assert tr.at(20.5) <= OUTAGE_SHARE * 1200 * 1.05
    assert tr.at(32) > 600


def test_capacity_rise_is_found_by_probing() -> None:
    tr = run(create("steady", LIMITS), steps((40, 500), (80, 1800)), 120)
    assert tr.at(39) + AUDIO_KBPS <= 520
    assert statistics.mean(tr.between(100, 120)) + AUDIO_KBPS > 0.8 * 1800


def test_limits_are_respected() -> None:
    limits = AbrLimits(min_kbps=300, max_kbps=800, start_kbps=500)
    tr = run(create("steady", limits), steps((20, 5000), (10, 100), (5, 0), (20, 5000)), 55)
    assert min(tr.kbps) >= 300 and max(tr.kbps) <= 800
    assert tr.at(19) >= 0.97 * 800  # start-up probing reaches the ceiling quickly


def test_audio_is_taken_out_of_the_video_bitrate() -> None:
    # audio is 11% of a 600 kbit/s link: the video gets what is left under the headroom
    tr = run(create("steady", LIMITS), steps((40, 600)), 40)
    assert max(tr.between(15, 30)) + AUDIO_KBPS <= HEADROOM * 600 * 1.06
