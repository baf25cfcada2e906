"""The connection check (``steadycast probe``), without I/O: wire messages, analysis, verdict,
recommendation, and the validator of a stored result.

Shared by the probe client (``encoder.probe``) and the relay's probe endpoint
(``relay.web.probe``), which never import each other. Nothing here reads a clock or touches a
socket: ``now`` (seconds, any monotonic clock) comes in as an argument.

**Wire messages** (binary WebSocket messages on ``GET /probe``; the first byte is the type,
integers are big-endian; described for people in ``relay/web/probe.py``):

- ``FILLER`` ``0x01`` + 1..``PROBE_MAX_FILLER_BYTES`` bytes of anything (client -> relay);
- ``PING`` ``0x02`` + u64 id (9 bytes, client -> relay);
- ``ACK`` ``0x81`` + u64 bytes of binary messages received on this connection, the type
  bytes included (9 bytes, relay -> client);
- ``PONG`` ``0x82`` + the u64 id of the PING it answers (9 bytes, relay -> client).

A wrong length or an unknown type raises ``uplink.ProtocolError`` (``MALFORMED`` or
``UNKNOWN_TYPE``), which closes that one connection with the reason.

**Analysis** (``ProbeAnalysis``): fed the cumulative acknowledged bytes and RTT samples. The
probe has an idle phase (pings only, ``idle_s``) and then a loaded phase (filler as fast as the
link takes it, pings interleaved):

- *Progress* is an ACK whose byte count grew, or a PONG. A dropout is ``DROPOUT_THRESHOLD_S``
  (0.5 s) or more without progress, or a lost connection (``monitor.dropout.DropoutDetector``:
  it starts at the last progress and ends at the next one). A dropout still open when the
  probe ends is closed there and flagged ``open_at_end``.
- *Throughput*: the loaded phase is cut into whole 1 s windows from its start; a window's rate
  is the acknowledged bytes in it (the cumulative count interpolated linearly between ACKs
  less than the dropout threshold apart; across a longer gap the bytes count at its end).
  Windows that overlap a dropout, or start before the relay's first answer, are left out of
  the percentiles: outages are reported as dropouts (and hidden by the relay's buffer),
  throughput says what the link carries while it works. p10, p50, p90 are
  linear-interpolation percentiles (numpy's default), ``mean`` the mean of those windows,
  ``overall_mean`` all loaded-phase bytes over its whole length.
- *RTT*: PING to PONG, classed idle or loaded by when the PING was sent; a PING in flight
  during a dropout is left out (its wait is the outage's, reported as a dropout); median and
  p95 of each; ``bufferbloat`` = max(0, loaded median - idle median); ``jitter`` = the mean
  absolute difference between consecutive idle RTT samples (``jitter_loaded`` the same under
  load).

**Recommendation** (``recommend``; ``AUDIO_KBPS`` = the encoder's AAC bitrate, from
``uplink.media`` like the frame-rate floor and the relay's default buffer):

- start video bitrate = 70 % of the throughput's p10, minus the audio; max = 90 % of the
  median, minus the audio, at most ``RECOMMEND_MAX_KBPS``; both rounded down to 10 kbit/s,
  start never above max. Below ``MIN_VIDEO_KBPS`` of start the link is not streamable;
- resolution: the largest of ``RESOLUTIONS`` whose frame-rate floor at 30 fps
  (``uplink.media.default_floor_kbps``, the encoder's) is at most the start bitrate;
- relay buffer = the longest dropout + 2 s, rounded up to a whole second, at least 3 s, at
  most 30 s;
- verdict: ``good`` when streamable, the recommended buffer is at most the relay's default
  (``BUFFER_MS_DEFAULT``, 5 s) and dropouts took at most 5 % of the probe; ``poor`` when not
  streamable, when nothing was measured, or when the longest dropout + 2 s exceeds the 30 s
  cap; ``fair`` otherwise.

**Stored result** (``validate_submission``): the body of ``POST /api/probes``, checked field by
field (types, finite numbers within ranges, lengths, no unknown keys, at most
``MAX_RESULT_BYTES``); a ``ProbeResultError`` names the first bad field.
"""

from __future__ import annotations

import json
import math
import re
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from monitor.dropout import (
    DROPOUT_THRESHOLD_S_DEFAULT,
    DropoutDetector,
    DropoutEnded,
    DropoutEvent,
)
from monitor.validate import (
    Invalid,
    check_table,
    is_integer,
    is_number,
    join_path,
    shorten,
    within,
)
from uplink import CloseCode, ProtocolError
from uplink.media import AUDIO_KBPS, BUFFER_MS_DEFAULT, default_floor_kbps, parse_resolution

# --- wire ----------------------------------------------------------------------------------
FILLER = 0x01
PING = 0x02
ACK = 0x81
PONG = 0x82
PROBE_MAX_FILLER_BYTES = 64 * 1024  # payload of one FILLER message
PROBE_MAX_MESSAGE_BYTES = 1 + PROBE_MAX_FILLER_BYTES
_U64 = struct.Struct(">BQ")
_U64_MAX = 2**64 - 1


@dataclass(frozen=True, slots=True)
class Filler:
    size: int  # the whole message, type byte included


@dataclass(frozen=True, slots=True)
class Ping:
    ping_id: int


@dataclass(frozen=True, slots=True)
class Ack:
    received_bytes: int


@dataclass(frozen=True, slots=True)
class Pong:
    ping_id: int


def encode_ping(ping_id: int) -> bytes:
    return _U64.pack(PING, ping_id & _U64_MAX)


def encode_pong(ping_id: int) -> bytes:
    return _U64.pack(PONG, ping_id)


def encode_ack(received_bytes: int) -> bytes:
    return _U64.pack(ACK, min(received_bytes, _U64_MAX))


def encode_filler(payload_bytes: int) -> bytes:
    """A FILLER of ``payload_bytes`` (1..PROBE_MAX_FILLER_BYTES) of zero bytes."""
    if not 1 <= payload_bytes <= PROBE_MAX_FILLER_BYTES:
        raise ValueError(f"payload_bytes={payload_bytes}: must be 1..{PROBE_MAX_FILLER_BYTES}")
    return bytes([FILLER]) + bytes(payload_bytes)


def parse_client_message(data: bytes) -> Filler | Ping:
    """A message the client sent (at the relay). Raises ProtocolError."""
    if not data:
        raise ProtocolError(CloseCode.MALFORMED, "empty probe message")
    kind = data[0]
    if kind == FILLER:
        if len(data) < 2:
            raise ProtocolError(CloseCode.MALFORMED, "FILLER without payload")
        if len(data) > PROBE_MAX_MESSAGE_BYTES:
            raise ProtocolError(CloseCode.TOO_LARGE, f"FILLER of {len(data)} bytes exceeds "
                                                     f"{PROBE_MAX_MESSAGE_BYTES}")
        return Filler(len(data))
    if kind == PING:
        if len(data) != _U64.size:
            raise ProtocolError(CloseCode.MALFORMED, f"PING must be {_U64.size} bytes, "
                                                     f"got {len(data)}")
        return Ping(_U64.unpack(data)[1])
    raise ProtocolError(CloseCode.UNKNOWN_TYPE, f"unknown probe message type 0x{kind:02x} "
                                                "(FILLER 0x01 and PING 0x02 are valid)")


def parse_relay_message(data: bytes) -> Ack | Pong:
    """A message the relay sent (at the client). Raises ProtocolError."""
    if not data:
        raise ProtocolError(CloseCode.MALFORMED, "empty probe message")
    kind = data[0]
    if kind not in (ACK, PONG):
        raise ProtocolError(CloseCode.UNKNOWN_TYPE, f"unknown probe message type 0x{kind:02x} "
                                                    "(ACK 0x81 and PONG 0x82 are valid)")
    if len(data) != _U64.size:
        raise ProtocolError(CloseCode.MALFORMED, f"{'ACK' if kind == ACK else 'PONG'} must be "
                                                 f"{_U64.size} bytes, got {len(data)}")
    value = _U64.unpack(data)[1]
    return Ack(value) if kind == ACK else Pong(value)


# --- statistics ----------------------------------------------------------------------------
def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100) by linear interpolation between the closest ranks (numpy's
    default); None for no values."""
    if not values:
        return None
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def mean_abs_diff(values: Sequence[float]) -> float | None:
    """Mean absolute difference between consecutive values (jitter); None below 2 values."""
    if len(values) < 2:
        return None
    return sum(abs(b - a) for a, b in zip(values, values[1:], strict=False)) / (len(values) - 1)


# --- recommendation ------------------------------------------------------------------------
START_SHARE_OF_P10 = 0.70
MAX_SHARE_OF_P50 = 0.90
RECOMMEND_MAX_KBPS = 2500  # the relay's default output bitrate: more would be re-encoded away
MIN_VIDEO_KBPS = 100  # below this start bitrate no resolution gets a watchable picture
KBPS_STEP = 10  # recommended bitrates are rounded down to this
FPS = 30
RESOLUTIONS = ((1280, 720), (854, 480), (640, 360), (426, 240))  # largest first
BUFFER_MARGIN_S = 2.0
BUFFER_FLOOR_S = 3.0
BUFFER_CAP_S = 30.0
GOOD_MAX_DROPOUT_SHARE = 0.05
THROUGHPUT_WINDOW_S = 1.0


def buffer_ms_for(longest_dropout_s: float) -> int:
    """The relay buffer that hides a dropout this long: +2 s, whole seconds, within 3..30 s."""
    seconds = math.ceil(longest_dropout_s + BUFFER_MARGIN_S - 1e-9)
    return int(min(BUFFER_CAP_S, max(BUFFER_FLOOR_S, seconds)) * 1000)


@dataclass(frozen=True)
class Recommendation:
    streamable: bool
    start_kbps: int | None
    max_kbps: int | None
    resolution: str | None  # "WxH"
    audio_kbps: int
    buffer_ms: int
    buffer_capped: bool  # the longest dropout is longer than the capped buffer can hide

    def as_dict(self) -> dict[str, Any]:
        return {"streamable": self.streamable, "start_kbps": self.start_kbps,
                "max_kbps": self.max_kbps, "resolution": self.resolution,
                "audio_kbps": self.audio_kbps, "buffer_ms": self.buffer_ms}


def recommend(p10_kbps: float | None, p50_kbps: float | None,
              longest_dropout_s: float) -> Recommendation:
    """The rule in the module docstring."""
    buffer_ms = buffer_ms_for(longest_dropout_s)
    capped = longest_dropout_s + BUFFER_MARGIN_S > BUFFER_CAP_S
    if p10_kbps is None or p50_kbps is None:
        return Recommendation(False, None, None, None, AUDIO_KBPS, buffer_ms, capped)
    max_kbps = _round_down(min(RECOMMEND_MAX_KBPS, MAX_SHARE_OF_P50 * p50_kbps - AUDIO_KBPS))
    start_kbps = min(max_kbps, _round_down(START_SHARE_OF_P10 * p10_kbps - AUDIO_KBPS))
    if start_kbps < MIN_VIDEO_KBPS:
        return Recommendation(False, None, None, None, AUDIO_KBPS, buffer_ms, capped)
    resolution = next(f"{w}x{h}" for w, h in RESOLUTIONS
                      if default_floor_kbps(w, h, FPS) <= start_kbps or (w, h) == RESOLUTIONS[-1])
    return Recommendation(True, start_kbps, max_kbps, resolution, AUDIO_KBPS, buffer_ms, capped)


def _round_down(kbps: float) -> int:
    return int(math.floor(kbps / KBPS_STEP) * KBPS_STEP)


def min_streamable_p10_kbps() -> int:
    """The lowest throughput p10 that gives a start bitrate of MIN_VIDEO_KBPS."""
    return math.ceil((MIN_VIDEO_KBPS + AUDIO_KBPS) / START_SHARE_OF_P10)


# --- analysis ------------------------------------------------------------------------------
@dataclass(frozen=True)
class RttSample:
    t_s: float  # seconds since the probe started, when the PONG arrived
    rtt_ms: float
    loaded: bool


@dataclass(frozen=True)
class Dropout:
    start_s: float  # seconds since the probe started
    duration_s: float
    cause: str
    open_at_end: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {"start_s": round(self.start_s, 3), "duration_s": round(self.duration_s, 3),
                "cause": self.cause, "open_at_end": self.open_at_end}


class ProbeAnalysis:
    """Samples in, figures out (see the module docstring). Times are of the caller's clock;
    ``start`` is the probe's second 0, the loaded phase begins ``idle_s`` later."""

    def __init__(self, start: float, idle_s: float,
                 dropout_threshold_s: float = DROPOUT_THRESHOLD_S_DEFAULT) -> None:
        if not (math.isfinite(idle_s) and idle_s >= 0):
            raise ValueError(f"idle_s={idle_s}: must be >= 0")
        self.start = start
        self.idle_s = idle_s
        self.detector = DropoutDetector(dropout_threshold_s)
        self.acked: list[tuple[float, int]] = [(0.0, 0)]  # (seconds since start, bytes)
        self.rtts: list[RttSample] = []
        self.dropouts: list[Dropout] = []
        self.finished_at_s: float | None = None
        self.first_progress_s: float | None = None  # the relay's first answer

    @property
    def loaded_start_s(self) -> float:
        return self.idle_s

    def _rel(self, now: float) -> float:
        return now - self.start

    def _progress(self, now: float) -> list[DropoutEvent]:
        if self.first_progress_s is None:
            self.first_progress_s = self._rel(now)
        return self._track(self.detector.on_media(now))

    def _track(self, events: list[DropoutEvent]) -> list[DropoutEvent]:
        for ev in events:
            if isinstance(ev, DropoutEnded):
                self.dropouts.append(Dropout(self._rel(ev.start), ev.duration_s, ev.cause.value))
        return events

    def on_acked(self, now: float, acked_bytes_total: int) -> list[DropoutEvent]:
        """The cumulative bytes the relay has acknowledged since the probe started (over every
        connection). Progress when it grew."""
        last = self.acked[-1][1]
        if acked_bytes_total < last:
            raise ValueError(f"acknowledged bytes went back from {last} to {acked_bytes_total}")
        if acked_bytes_total == last:
            return []
        self.acked.append((self._rel(now), acked_bytes_total))
        return self._progress(now)

    def on_rtt(self, now: float, rtt_s: float, loaded: bool) -> list[DropoutEvent]:
        """A PONG arrived ``rtt_s`` after its PING, sent in the loaded phase or not. Progress."""
        self.rtts.append(RttSample(self._rel(now), rtt_s * 1000, loaded))
        return self._progress(now)

    def on_connection_lost(self, now: float) -> list[DropoutEvent]:
        return self._track(self.detector.on_connection_lost(now))

    def poll(self, now: float) -> list[DropoutEvent]:
        return self._track(self.detector.poll(now))

    # -- live figures (the progress line) --
    def current_kbps(self, now: float, window_s: float = THROUGHPUT_WINDOW_S) -> float:
        t = self._rel(now)
        return (self._acked_at(t) - self._acked_at(t - window_s)) * 8 / window_s / 1000

    def in_dropout_s(self, now: float) -> float | None:
        start = self.detector.current_start
        return None if start is None else now - start

    # -- the result --
    def _acked_at(self, t_s: float) -> float:
        """Cumulative acknowledged bytes at ``t_s``, linear between samples, flat after."""
        samples = self.acked
        if t_s <= samples[0][0]:
            return float(samples[0][1])
        lo, hi = 0, len(samples) - 1
        if t_s >= samples[hi][0]:
            return float(samples[hi][1])
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if samples[mid][0] <= t_s:
                lo = mid
            else:
                hi = mid
        (t0, b0), (t1, b1) = samples[lo], samples[hi]
        if t1 - t0 >= self.detector.threshold_s:
            return float(b0)  # across a dropout the bytes arrived at its end, not during it
        return b0 + (b1 - b0) * (t_s - t0) / (t1 - t0) if t1 > t0 else float(b1)

    def _spans_dropout(self, r: RttSample) -> bool:
        sent_s = r.t_s - r.rtt_ms / 1000
        return any(d.start_s < r.t_s and d.start_s + d.duration_s > sent_s
                   for d in self.dropouts)

    def windows(self, end_s: float) -> list[tuple[float, float, bool]]:
        """(start s, kbit/s, used in the percentiles) of each whole 1 s loaded window."""
        out: list[tuple[float, float, bool]] = []
        count = max(0, math.floor((end_s - self.loaded_start_s) / THROUGHPUT_WINDOW_S + 1e-9))
        for i in range(count):
            w0 = self.loaded_start_s + i * THROUGHPUT_WINDOW_S
            w1 = w0 + THROUGHPUT_WINDOW_S
            kbps = (self._acked_at(w1) - self._acked_at(w0)) * 8 / THROUGHPUT_WINDOW_S / 1000
            used = (self.first_progress_s is not None and w0 >= self.first_progress_s
                    and not any(d.start_s < w1 and d.start_s + d.duration_s > w0
                                for d in self.dropouts))
            out.append((w0, kbps, used))
        return out

    def finish(self, now: float) -> dict[str, Any]:
        """Close the analysis at ``now`` and return the result (the shape ``validate_result``
        checks)."""
        self.poll(now)
        for ev in self.detector.stop(now):
            if isinstance(ev, DropoutEnded):
                self.dropouts.append(Dropout(self._rel(ev.start), ev.duration_s, ev.cause.value,
                                             open_at_end=True))
        end_s = self._rel(now)
        self.finished_at_s = end_s
        windows = self.windows(end_s)
        used = [k for _, k, u in windows if u]
        loaded_s = max(0.0, end_s - self.loaded_start_s)
        loaded_bytes = self._acked_at(end_s) - self._acked_at(self.loaded_start_s)
        rtts = [r for r in self.rtts if not self._spans_dropout(r)]
        idle = [r.rtt_ms for r in rtts if not r.loaded]
        loaded = [r.rtt_ms for r in rtts if r.loaded]
        idle_med, loaded_med = percentile(idle, 50), percentile(loaded, 50)
        bloat = None if idle_med is None or loaded_med is None else max(0.0, loaded_med - idle_med)
        longest = max((d.duration_s for d in self.dropouts), default=0.0)
        total_dropout_s = sum(d.duration_s for d in self.dropouts)
        p10, p50 = percentile(used, 10), percentile(used, 50)
        rec = recommend(p10, p50, longest)
        throughput = {
            "p10": _r(p10), "p50": _r(p50), "p90": _r(percentile(used, 90)),
            "mean": _r(sum(used) / len(used) if used else None),
            "overall_mean": _r(loaded_bytes * 8 / loaded_s / 1000 if loaded_s > 0 else 0.0),
            "windows": len(used),
        }
        rtt = {
            "idle_median": _r(idle_med), "idle_p95": _r(percentile(idle, 95)),
            "loaded_median": _r(loaded_med), "loaded_p95": _r(percentile(loaded, 95)),
            "bufferbloat": _r(bloat), "jitter": _r(mean_abs_diff(idle)),
            "jitter_loaded": _r(mean_abs_diff(loaded)),
            "idle_samples": len(idle), "loaded_samples": len(loaded),
        }
        level, verdict_en, verdict_vi = _verdict(rec, p10, longest, total_dropout_s, end_s,
                                                 measured=bool(used))
        result: dict[str, Any] = {
            "version": RESULT_VERSION,
            "duration_s": round(end_s, 3),
            "idle_s": round(self.idle_s, 3),
            "bytes_acked": int(self.acked[-1][1]),
            "throughput_kbps": throughput,
            "rtt_ms": rtt,
            "dropouts": [d.as_dict() for d in self.dropouts[:MAX_DROPOUTS]],
            "dropout_total_s": round(total_dropout_s, 3),
            "series": {"throughput_kbps": [[round(t, 3), round(k, 1), u]
                                           for t, k, u in windows[:MAX_SERIES_POINTS]]},
            "recommendation": rec.as_dict(),
            "verdict": {"level": level, "en": verdict_en, "vi": verdict_vi},
            "reasons": _reasons(rec, throughput, rtt, self.dropouts, longest),
        }
        return result


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _verdict(rec: Recommendation, p10: float | None, longest_s: float, dropout_s: float,
             duration_s: float, *, measured: bool) -> tuple[str, str, str]:
    if not measured:
        return ("poor", "Poor: nothing could be measured; the relay did not acknowledge a "
                        "whole second of upload outside outages.",
                "Kém: không đo được gì; relay không xác nhận được trọn một giây tải lên nào "
                "ngoài lúc mất sóng.")
    if not rec.streamable:
        need = min_streamable_p10_kbps()
        return ("poor", f"Poor: the upload is too slow for a livestream (10th percentile "
                        f"{p10:.0f} kbit/s; at least {need} kbit/s is needed).",
                f"Kém: tốc độ tải lên quá chậm để livestream (phân vị 10 là {p10:.0f} kbit/s; "
                f"cần ít nhất {need} kbit/s).")
    res, buf_s = rec.resolution, rec.buffer_ms // 1000
    if rec.buffer_capped:
        return ("poor", f"Poor: outages up to {longest_s:.1f} s are longer than a relay buffer "
                        f"can hide ({BUFFER_CAP_S:.0f} s): viewers will see the reconnecting "
                        "slate.",
                f"Kém: có lần mất sóng tới {longest_s:.1f} giây, lâu hơn mức bộ đệm relay che "
                f"được ({BUFFER_CAP_S:.0f} giây): người xem sẽ thấy màn hình chờ kết nối lại.")
    share = dropout_s / duration_s if duration_s > 0 else 0.0
    if rec.buffer_ms <= BUFFER_MS_DEFAULT and share <= GOOD_MAX_DROPOUT_SHARE:
        return ("good", f"Good: this link carries a {res} livestream.",
                f"Tốt: đường truyền này đủ cho livestream {res}.")
    return ("fair", f"Fair: this link carries a {res} livestream, with a {buf_s} s relay buffer "
                    "to hide its outages.",
            f"Tạm được: đường truyền này livestream được {res}, với bộ đệm relay {buf_s} giây "
            "để che các lần mất sóng.")


def _reasons(rec: Recommendation, tp: Mapping[str, Any], rtt: Mapping[str, Any],
             dropouts: Sequence[Dropout], longest_s: float) -> list[dict[str, str]]:
    out: list[dict[str, str]] = []
    if tp["windows"]:
        out.append({
            "en": f"Upload: 10th percentile {tp['p10']:.0f} kbit/s, median {tp['p50']:.0f}, "
                  f"90th percentile {tp['p90']:.0f}, over {tp['windows']} one-second windows "
                  "outside outages.",
            "vi": f"Tốc độ tải lên: phân vị 10 là {tp['p10']:.0f} kbit/s, trung vị "
                  f"{tp['p50']:.0f}, phân vị 90 là {tp['p90']:.0f}, qua {tp['windows']} khoảng "
                  "1 giây ngoài lúc mất sóng."})
    if rec.streamable:
        assert rec.start_kbps is not None and rec.max_kbps is not None
        out.append({
            "en": f"Start at {rec.start_kbps} kbit/s of video: 70% of the 10th percentile, minus "
                  f"{rec.audio_kbps} kbit/s of audio, so the stream starts below what the link "
                  "gave nine seconds in ten.",
            "vi": f"Bắt đầu với {rec.start_kbps} kbit/s cho hình: 70% của phân vị 10, trừ "
                  f"{rec.audio_kbps} kbit/s cho tiếng, để luồng bắt đầu dưới mức đường truyền "
                  "đạt được chín giây trên mười."})
        out.append({
            "en": f"At most {rec.max_kbps} kbit/s of video: 90% of the median, minus the audio"
                  f" (never above {RECOMMEND_MAX_KBPS}).",
            "vi": f"Tối đa {rec.max_kbps} kbit/s cho hình: 90% của trung vị, trừ phần tiếng "
                  f"(không quá {RECOMMEND_MAX_KBPS})."})
        assert rec.resolution is not None
        w, h = parse_resolution(rec.resolution)
        out.append({
            "en": f"{rec.resolution}: the largest size whose smooth-motion floor "
                  f"({default_floor_kbps(w, h, FPS)} kbit/s at {FPS} fps) fits the start "
                  "bitrate.",
            "vi": f"{rec.resolution}: kích thước lớn nhất mà mức tối thiểu cho hình mượt "
                  f"({default_floor_kbps(w, h, FPS)} kbit/s ở {FPS} khung/giây) vừa với tốc độ "
                  "bắt đầu."})
    buf_s = rec.buffer_ms // 1000
    if not dropouts:
        out.append({
            "en": f"No outages seen: the minimum relay buffer of {buf_s} s is enough.",
            "vi": f"Không thấy lần mất sóng nào: bộ đệm relay tối thiểu {buf_s} giây là đủ."})
    elif rec.buffer_capped:
        out.append({
            "en": f"{len(dropouts)} outage(s), the longest {longest_s:.1f} s: the relay buffer is "
                  f"capped at {buf_s} s, so longer outages show the reconnecting slate.",
            "vi": f"{len(dropouts)} lần mất sóng, lâu nhất {longest_s:.1f} giây: bộ đệm relay tối "
                  f"đa {buf_s} giây, nên lần mất sóng lâu hơn sẽ hiện màn hình chờ kết nối lại."})
    else:
        out.append({
            "en": f"{len(dropouts)} outage(s), the longest {longest_s:.1f} s: a relay buffer of "
                  f"{buf_s} s (longest + 2 s, at least 3 s, at most 30 s) hides them "
                  f"(buffer_ms = {rec.buffer_ms}).",
            "vi": f"{len(dropouts)} lần mất sóng, lâu nhất {longest_s:.1f} giây: bộ đệm relay "
                  f"{buf_s} giây (lâu nhất + 2 giây, ít nhất 3, nhiều nhất 30) che được chúng "
                  f"(buffer_ms = {rec.buffer_ms})."})
    if rtt["idle_median"] is not None and rtt["loaded_median"] is not None:
        out.append({
            "en": f"Round trip {rtt['idle_median']:.0f} ms idle, {rtt['loaded_median']:.0f} ms "
                  f"while uploading (bufferbloat {rtt['bufferbloat']:.0f} ms): the relay's "
                  "buffer must also cover this delay.",
            "vi": f"Độ trễ khứ hồi {rtt['idle_median']:.0f} ms khi rảnh, "
                  f"{rtt['loaded_median']:.0f} ms khi đang tải lên (bufferbloat "
                  f"{rtt['bufferbloat']:.0f} ms): bộ đệm relay cũng phải bù độ trễ này."})
    return out


# --- the stored result: validation -----------------------------------------------------------
RESULT_VERSION = 1
MAX_RESULT_BYTES = 48 * 1024  # compact JSON; the relay's request body limit is 64 KiB
MAX_SITE_CHARS = 64
MAX_DURATION_S = 3600.0
MAX_KBPS = 10_000_000.0  # 10 Gbit/s
MAX_MS = 600_000.0
MAX_DROPOUTS = 1000
MAX_SERIES_POINTS = 3600
MAX_REASONS = 20
MAX_TEXT_CHARS = 500
_RESOLUTION_RE = re.compile(r"^[1-9][0-9]{1,3}x[1-9][0-9]{1,3}$")


class ProbeResultError(Invalid):
    """A probe submission that cannot be stored; ``field`` is its dotted path."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(problem, field)

    @property
    def field(self) -> str:
        return self.path


@dataclass(frozen=True)
class ProbeSubmission:
    site: str
    latitude: float | None
    longitude: float | None
    result: dict[str, Any]

    @property
    def verdict_line(self) -> str:
        """The store's one-line verdict: the English one (it starts with Good, Fair or Poor;
        the Vietnamese one is in the result)."""
        return str(self.result["verdict"]["en"])


def _show(value: object) -> str:
    return shorten(repr(value), 40, "...")


class _Spec:
    nullable = False

    def check(self, value: object, path: str) -> Any:
        if value is None:
            if self.nullable:
                return None
            raise ProbeResultError(path, "must not be null")
        return self._check(value, path)

    def _check(self, value: object, path: str) -> Any:
        raise NotImplementedError


class _Num(_Spec):
    def __init__(self, lo: float, hi: float, nullable: bool = False) -> None:
        self.lo, self.hi, self.nullable = lo, hi, nullable

    def _check(self, value: object, path: str) -> float:
        if not is_number(value) or not within(value, self.lo, self.hi):
            raise ProbeResultError(path, f"must be a finite number within [{self.lo:g}, "
                                         f"{self.hi:g}], got {_show(value)}")
        return float(value)


class _Int(_Spec):
    def __init__(self, lo: int, hi: int, nullable: bool = False) -> None:
        self.lo, self.hi, self.nullable = lo, hi, nullable

    def _check(self, value: object, path: str) -> int:
        if not is_integer(value) or not within(value, self.lo, self.hi):
            raise ProbeResultError(path, f"must be an integer within [{self.lo}, {self.hi}], "
                                         f"got {_show(value)}")
        return value


class _Bool(_Spec):
    def _check(self, value: object, path: str) -> bool:
        if not isinstance(value, bool):
            raise ProbeResultError(path, f"must be true or false, got {_show(value)}")
        return value


class _Text(_Spec):
    def __init__(self, max_chars: int, min_chars: int = 0, nullable: bool = False,
                 pattern: re.Pattern[str] | None = None,
                 choices: tuple[str, ...] | None = None) -> None:
        self.max_chars, self.min_chars, self.nullable = max_chars, min_chars, nullable
        self.pattern, self.choices = pattern, choices

    def _check(self, value: object, path: str) -> str:
        if not isinstance(value, str):
            raise ProbeResultError(path, f"must be a string, got {_show(value)}")
        if self.choices is not None:
            if value not in self.choices:
                raise ProbeResultError(path, f"must be one of {', '.join(self.choices)}, "
                                             f"got {_show(value)}")
            return value
        if not self.min_chars <= len(value) <= self.max_chars:
            raise ProbeResultError(path, f"must be {self.min_chars}..{self.max_chars} "
                                         f"characters, got {len(value)}")
        if not value.isprintable():
            raise ProbeResultError(path, "must contain printable characters only")
        if self.pattern is not None and not self.pattern.match(value):
            raise ProbeResultError(path, f"must look like {self.pattern.pattern}, "
                                         f"got {_show(value)}")
        return value


class _Obj(_Spec):
    def __init__(self, fields: dict[str, _Spec], optional: tuple[str, ...] = ()) -> None:
        self.fields, self.optional = fields, optional

    def _check(self, value: object, path: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise ProbeResultError(path, f"must be an object, got {_show(value)}")
        return check_table(
            value, self.fields, path,
            check=lambda key, raw, key_path: self.fields[key].check(raw, key_path),
            unknown=lambda key: ProbeResultError(join_path(path, _key_label(key)),
                                                 "unknown field"),
            missing=lambda key, key_path: (None if key in self.optional
                                           else ProbeResultError(key_path, "missing")),
            report=_stop,
        )


class _List(_Spec):
    def __init__(self, item: _Spec, max_items: int) -> None:
        self.item, self.max_items = item, max_items

    def _check(self, value: object, path: str) -> list[Any]:
        if not isinstance(value, list):
            raise ProbeResultError(path, f"must be a list, got {_show(value)}")
        if len(value) > self.max_items:
            raise ProbeResultError(path, f"at most {self.max_items} items, got {len(value)}")
        return [self.item.check(v, f"{path}[{i}]") for i, v in enumerate(value)]


class _Tuple(_Spec):
    def __init__(self, *items: _Spec) -> None:
        self.items = items

    def _check(self, value: object, path: str) -> list[Any]:
        if not isinstance(value, list) or len(value) != len(self.items):
            raise ProbeResultError(path, f"must be a list of {len(self.items)} items, "
                                         f"got {_show(value)}")
        return [s.check(v, f"{path}[{i}]") for i, (s, v) in enumerate(zip(self.items, value,
                                                                          strict=True))]


def _key_label(key: object) -> str:
    """An unknown key as it can be shown: itself when short and printable, else its repr."""
    if isinstance(key, str) and key and key.isprintable() and len(key) <= 40:
        return key
    return _show(key)


def _stop(problem: Invalid) -> None:
    """A stored result is refused at its first problem."""
    raise problem


_KBPS = _Num(0, MAX_KBPS, nullable=True)
_MS = _Num(0, MAX_MS, nullable=True)
_SECONDS = _Num(0, MAX_DURATION_S)
_TEXT = _Text(MAX_TEXT_CHARS, min_chars=1)

RESULT_SPEC = _Obj({
    "version": _Int(RESULT_VERSION, RESULT_VERSION),
    "duration_s": _SECONDS,
    "idle_s": _SECONDS,
    "bytes_acked": _Int(0, 10**15),
    "throughput_kbps": _Obj({"p10": _KBPS, "p50": _KBPS, "p90": _KBPS, "mean": _KBPS,
                             "overall_mean": _Num(0, MAX_KBPS),
                             "windows": _Int(0, MAX_SERIES_POINTS)}),
    "rtt_ms": _Obj({"idle_median": _MS, "idle_p95": _MS, "loaded_median": _MS,
                    "loaded_p95": _MS, "bufferbloat": _MS, "jitter": _MS, "jitter_loaded": _MS,
                    "idle_samples": _Int(0, 10**7), "loaded_samples": _Int(0, 10**7)}),
    "dropouts": _List(_Obj({"start_s": _SECONDS, "duration_s": _SECONDS,
                            "cause": _Text(32, choices=("no_data", "connection_lost")),
                            "open_at_end": _Bool()}), MAX_DROPOUTS),
    "dropout_total_s": _SECONDS,
    "series": _Obj({"throughput_kbps": _List(_Tuple(_SECONDS, _Num(0, MAX_KBPS), _Bool()),
                                             MAX_SERIES_POINTS)}),
    "recommendation": _Obj({"streamable": _Bool(),
                            "start_kbps": _Int(0, int(MAX_KBPS), nullable=True),
                            "max_kbps": _Int(0, int(MAX_KBPS), nullable=True),
                            "resolution": _Text(9, nullable=True, pattern=_RESOLUTION_RE),
                            "audio_kbps": _Int(0, 1000),
                            "buffer_ms": _Int(0, int(MAX_MS))}),
    "verdict": _Obj({"level": _Text(8, choices=("good", "fair", "poor")),
                     "en": _TEXT, "vi": _TEXT}),
    "reasons": _List(_Obj({"en": _TEXT, "vi": _TEXT}), MAX_REASONS),
})

SUBMISSION_SPEC = _Obj({
    "site": _Text(MAX_SITE_CHARS, min_chars=1),
    "latitude": _Num(-90, 90, nullable=True),
    "longitude": _Num(-180, 180, nullable=True),
    "result": RESULT_SPEC,
}, optional=("latitude", "longitude"))


def check_site(site: object, path: str = "site") -> str:
    """A site name: 1..64 printable characters, not blank. Raises ProbeResultError."""
    value: str = SUBMISSION_SPEC.fields["site"].check(site, path)
    if not value.strip():
        raise ProbeResultError(path, "must not be blank")
    return value


def validate_result(result: object, path: str = "result") -> dict[str, Any]:
    """The result, checked (see RESULT_SPEC); raises ProbeResultError naming the bad field."""
    checked: dict[str, Any] = RESULT_SPEC.check(result, path)
    size = len(json.dumps(checked, ensure_ascii=False, separators=(",", ":")).encode())
    if size > MAX_RESULT_BYTES:
        raise ProbeResultError(path, f"{size} bytes of JSON, at most {MAX_RESULT_BYTES}")
    return checked


def validate_submission(body: object) -> ProbeSubmission:
    """The body of ``POST /api/probes``: ``{"site", "latitude"?, "longitude"?, "result"}``.
    Raises ProbeResultError naming the first bad field."""
    if not isinstance(body, dict):
        raise ProbeResultError("body", f"must be a JSON object, got {_show(body)}")
    for key in body:
        if key not in SUBMISSION_SPEC.fields:
            raise ProbeResultError(_key_label(key), "unknown field")
    site = check_site(body.get("site"))
    lat = SUBMISSION_SPEC.fields["latitude"].check(body.get("latitude"), "latitude")
    lon = SUBMISSION_SPEC.fields["longitude"].check(body.get("longitude"), "longitude")
    if (lat is None) != (lon is None):
        raise ProbeResultError("latitude" if lat is None else "longitude",
                               "give latitude and longitude together, or neither")
    if "result" not in body:
        raise ProbeResultError("result", "missing")
    return ProbeSubmission(site, lat, lon, validate_result(body["result"]))


# --- the report a person reads ---------------------------------------------------------------
def encode_command(rec: Mapping[str, Any]) -> str | None:
    """The ``steadycast encode`` options the recommendation stands for (None: not streamable)."""
    if not rec.get("streamable"):
        return None
    return (f"--resolution {rec['resolution']} --start-kbps {rec['start_kbps']} "
            f"--max-kbps {rec['max_kbps']}")


def format_report(site: str, result: Mapping[str, Any]) -> str:
    """The verdict, figures, recommendation and reasons, in English and Vietnamese."""
    tp, rtt, rec, v = (result["throughput_kbps"], result["rtt_ms"], result["recommendation"],
                       result["verdict"])

    def f(x: float | None, unit: str = "") -> str:
        return "-" if x is None else f"{x:.0f}{unit}"

    lines = [f"steadycast probe: site {site!r}, {result['duration_s']:.0f} s "
             f"({result['idle_s']:.0f} s idle, then loaded)",
             f"Verdict:   {v['en']}",
             f"Kết luận:  {v['vi']}",
             "",
             f"Upload throughput (kbit/s, {tp['windows']} one-second windows outside outages): "
             f"p10 {f(tp['p10'])}  median {f(tp['p50'])}  p90 {f(tp['p90'])}  mean "
             f"{f(tp['mean'])}  (overall, outages included: {f(tp['overall_mean'])})",
             f"Round trip: idle median {f(rtt['idle_median'], ' ms')}, p95 "
             f"{f(rtt['idle_p95'], ' ms')}; under load median {f(rtt['loaded_median'], ' ms')}, "
             f"p95 {f(rtt['loaded_p95'], ' ms')}; bufferbloat {f(rtt['bufferbloat'], ' ms')}; "
             f"jitter {f(rtt['jitter'], ' ms')}"]
    drops = result["dropouts"]
    if drops:
        parts = ", ".join(f"at {d['start_s']:.1f} s for {d['duration_s']:.1f} s"
                          + (" (still out at the end)" if d["open_at_end"] else "")
                          for d in drops)
        lines.append(f"Dropouts: {len(drops)}, {result['dropout_total_s']:.1f} s in all: {parts}")
    else:
        lines.append("Dropouts: none")
    lines.append("")
    cmd = encode_command(rec)
    if cmd is not None:
        lines.append("Recommendation / Khuyến nghị:")
        lines.append(f"  steadycast encode ... {cmd}")
        lines.append(f"  relay config: buffer_ms = {rec['buffer_ms']}")
    else:
        lines.append("Recommendation / Khuyến nghị: do not livestream from here / "
                     "không nên livestream từ đây")
    lines.append("Why / Vì sao:")
    for r in result["reasons"]:
        lines.append(f"  - {r['en']}")
        lines.append(f"    {r['vi']}")
    return "\n".join(lines)
