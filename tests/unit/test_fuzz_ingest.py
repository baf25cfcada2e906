"""The core loop of benchmarks/fuzz_ingest.py on a few thousand messages, so it does not rot.

The full run (a million messages, and the real relay beside a real stream) is
``python -m benchmarks.fuzz_ingest``, outside the default suite."""

from __future__ import annotations

import random

from benchmarks.fuzz_ingest import MUTATIONS, fuzz_receiver, mutate, valid_message
from uplink import decode


def test_mutations_of_valid_messages_only_ever_give_protocol_errors() -> None:
    result = fuzz_receiver(5_000, seed=7)
    assert result["messages"] == 5_000
    codes = result["codes"]
    # the mix reaches the parser's errors and the receiver's state checks, and some pass
    for code in ("4400", "4401", "4402", "4409", "accepted"):
        assert codes.get(code, 0) > 0, codes


def test_valid_messages_are_valid_and_mutations_change_them() -> None:
    rng = random.Random(3)
    changed = 0
    for _ in range(500):
        data = valid_message(rng)
        decode(data)  # raises if the generator made an invalid message
        changed += mutate(rng, data, valid_message(rng)) != data
    assert changed > 400 and len(MUTATIONS) == 8
