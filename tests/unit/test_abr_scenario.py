"""The ABR tests' scenario (tests.abr_scenario): the sender it models in front of the link model."""

from __future__ import annotations

import pytest

from encoder.abr import AbrLimits, create
from tests.abr_scenario import Scenario, ScenarioError, phases

FIXED_1000 = AbrLimits(min_kbps=200, max_kbps=2500, start_kbps=1000)


def fixed() -> Scenario:
    return Scenario(create("fixed", FIXED_1000), phases((10, 5000)))


def test_uncongested_link_acknowledges_what_is_made_one_rtt_later() -> None:
    sc = fixed()
    decisions = sc.run(10)
    last = decisions[-1].obs
    made = 10 * (1000 + 64) * 1000 / 8  # video + audio for 10 s
    assert last.sent_bytes_total == pytest.approx(made, rel=0.01)
    assert last.acked_bytes_total == pytest.approx(made, rel=0.01)
    assert last.unsent_bytes == 0 and last.backlog_ms <= 60
    # the RTT: the 50 ms base plus a piece's time through the 5000 kbit/s link
    assert last.srtt_s is not None and 0.05 <= last.srtt_s < 0.06
    assert all(d.obs.acks for d in decisions)


def test_window_holds_the_rest_unsent() -> None:
    sc = Scenario(create("fixed", FIXED_1000), phases((10, 500)), window_bytes=20_000)
    for d in sc.run(10):
        handed = d.obs.backlog_bytes - d.obs.unsent_bytes
        assert handed <= 20_000 + 1330  # whole pieces: the last one may cross the window
    assert d.obs.unsent_ms > 5000  # 1064 kbit/s into 500: the queue builds in the sender
    # without a window everything is handed over: the queue is in the network, and in the RTT
    sc = Scenario(create("fixed", FIXED_1000), phases((10, 500)), window_bytes=None)
    last = sc.run(10)[-1].obs
    assert last.unsent_bytes == 0
    assert last.srtt_s is not None and last.srtt_s > 5.0


def test_disconnect_unsends_the_unacknowledged_and_resent_media_gives_no_rtt() -> None:
    sc = Scenario(create("fixed", FIXED_1000), phases((5, 800), (2, 800, False), (5, 5000)))
    before = sc.run(4.9)[-1].obs
    assert before.backlog_bytes > before.unsent_bytes  # some handed over, not acknowledged
    out = sc.run(2)  # 5.0 .. 6.9 s: disconnected (a change comes before the update)
    assert not any(d.obs.connected for d in out)
    assert all(d.obs.unsent_bytes == d.obs.backlog_bytes for d in out)
    assert out[-1].obs.sent_bytes_total == out[0].obs.sent_bytes_total  # nothing sent
    first = sc.run(0.1)[0].obs
    assert first.connected and first.last_ack_time == pytest.approx(7.0)  # the WELCOME
    acks = [a for d in sc.run(1) for a in d.obs.acks]
    # the first ACKs cover media handed over twice: Karn's rule, no RTT sample
    assert acks[0].sent_at is None
    assert acks[-1].sent_at is not None
    sc.run(4)
    assert sc.decisions[-1].obs.backlog_ms <= 60  # all caught up


def test_relay_ack_ticks_batch_the_acknowledgements() -> None:
    sc = Scenario(create("fixed", FIXED_1000), phases((5, 5000)), ack_interval_s=0.1)
    decisions = sc.run(5)
    assert all(len(d.obs.acks) == 1 for d in decisions[1:])  # one relay tick per update


def test_runs_only_inside_the_phases_in_whole_updates() -> None:
    sc = fixed()
    with pytest.raises(ScenarioError, match="past the phases' end"):
        sc.run(10.1)
    with pytest.raises(ScenarioError, match="whole number"):
        sc.run(0.15)
    assert sc.run(10)[-1].now == pytest.approx(10.0)
    with pytest.raises(ScenarioError, match="at least one phase"):
        Scenario(create("fixed", FIXED_1000), [])
