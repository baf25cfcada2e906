"""``ProbeAnalysis``: the probe's samples in, its figures, verdict and reasons out. No I/O."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from monitor.dropout import (
    DROPOUT_THRESHOLD_S_DEFAULT,
    DropoutDetector,
    DropoutEnded,
    DropoutEvent,
)
from probe.recommend import (
    BUFFER_CAP_S,
    FPS,
    GOOD_MAX_DROPOUT_SHARE,
    RECOMMEND_MAX_KBPS,
    THROUGHPUT_WINDOW_S,
    Recommendation,
    min_streamable_p10_kbps,
    recommend,
)
from probe.result import MAX_DROPOUTS, MAX_SERIES_POINTS, RESULT_VERSION
from probe.stats import mean_abs_diff, percentile
from uplink.media import BUFFER_MS_DEFAULT, default_floor_kbps, parse_resolution


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
