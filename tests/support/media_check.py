"""What arrived at the platform, checked with ffprobe and ffmpeg (subprocesses).

:func:`assert_platform_contract` is DESIGN.md's "Platform output contract" for one recorded
session: both tracks present over the whole file, dts monotonic, no timestamp gap longer
than two frame intervals in either track, and ``ffmpeg -v error`` decodes without a message.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

# FLV timestamps are whole milliseconds: allow that much rounding on every gap limit.
TIMESTAMP_SLACK_S = 0.001
# How far a track's first/last timestamp may sit from the file's start/end.
SPAN_SLACK_S = 1.0


@dataclass
class TrackTimeline:
    codec: str
    pts_s: list[float] = field(default_factory=list)  # packet pts, file order
    dts_s: list[float] = field(default_factory=list)  # packet dts, file order
    durations_s: list[float] = field(default_factory=list)  # packet durations (0 if unknown)
    keyframes: int = 0

    @property
    def packets(self) -> int:
        return len(self.pts_s)

    @property
    def start_s(self) -> float:
        return min(self.pts_s) if self.pts_s else 0.0

    @property
    def end_s(self) -> float:
        """Last pts plus that packet's duration."""
        if not self.pts_s:
            return 0.0
        i = max(range(len(self.pts_s)), key=self.pts_s.__getitem__)
        return self.pts_s[i] + self.durations_s[i]

    @property
    def max_gap_s(self) -> float:
        return max_timestamp_gap_s(self.pts_s)


@dataclass
class MediaReport:
    path: Path
    video: TrackTimeline | None
    audio: TrackTimeline | None
    start_s: float  # earliest pts of any track
    duration_s: float  # latest track end minus start_s
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    sample_rate: int | None = None

    @property
    def end_s(self) -> float:
        return self.start_s + self.duration_s


def missing_ffmpeg() -> list[str]:
    """["ffmpeg"] when ffmpeg or ffprobe (Debian package ffmpeg) is not on PATH."""
    return [] if shutil.which("ffmpeg") and shutil.which("ffprobe") else ["ffmpeg"]


def max_timestamp_gap_s(pts_s: list[float]) -> float:
    """Largest difference between consecutive timestamps after sorting (0 for < 2)."""
    s = sorted(pts_s)
    return max((b - a for a, b in zip(s, s[1:], strict=False)), default=0.0)


def _gap_location(pts_s: list[float]) -> tuple[float, float]:
    """(gap, time where it starts) of the largest gap."""
    s = sorted(pts_s)
    best, at = 0.0, s[0] if s else 0.0
    for a, b in zip(s, s[1:], strict=False):
        if b - a > best:
            best, at = b - a, a
    return best, at


def _float(value: object) -> float | None:
    if value in (None, "N/A", ""):
        return None
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def _rate(value: object) -> float | None:
    if not isinstance(value, str) or value in ("0/0", "N/A"):
        return None
    try:
        r = Fraction(value)
    except (ValueError, ZeroDivisionError):
        return None
    return float(r) if r > 0 else None


def probe(path: Path) -> MediaReport:
    """ffprobe the file's streams and every packet."""
    proc = subprocess.run(
        [
            "ffprobe", "-v", "error", "-show_packets", "-show_streams", "-of", "json",
            "-show_entries",
            "packet=stream_index,pts_time,dts_time,duration_time,flags"
            ":stream=index,codec_type,codec_name,width,height,avg_frame_rate,r_frame_rate,"
            "sample_rate",
            str(path),
        ],  # fmt: skip
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise AssertionError(f"ffprobe failed on {path} (rc {proc.returncode}): {proc.stderr}")
    data = json.loads(proc.stdout or "{}")
    streams = {s["index"]: s for s in data.get("streams", [])}
    tracks: dict[int, TrackTimeline] = {}
    for s in streams.values():
        if s.get("codec_type") in ("video", "audio"):
            tracks[s["index"]] = TrackTimeline(codec=s.get("codec_name", "?"))
    for pkt in data.get("packets", []):
        tl = tracks.get(pkt.get("stream_index"))
        if tl is None:
            continue
        pts = _float(pkt.get("pts_time"))
        dts = _float(pkt.get("dts_time"))
        if pts is None:
            pts = dts
        if pts is None:
            continue
        tl.pts_s.append(pts)
        tl.dts_s.append(dts if dts is not None else pts)
        tl.durations_s.append(_float(pkt.get("duration_time")) or 0.0)
        if "K" in pkt.get("flags", ""):
            tl.keyframes += 1

    video = audio = None
    vstream = astream = None
    for idx, tl in tracks.items():
        kind = streams[idx]["codec_type"]
        if kind == "video" and video is None:
            video, vstream = tl, streams[idx]
        elif kind == "audio" and audio is None:
            audio, astream = tl, streams[idx]
    present = [t for t in (video, audio) if t is not None and t.pts_s]
    start = min((t.start_s for t in present), default=0.0)
    end = max((t.end_s for t in present), default=0.0)
    return MediaReport(
        path=Path(path),
        video=video,
        audio=audio,
        start_s=start,
        duration_s=max(0.0, end - start),
        width=vstream.get("width") if vstream else None,
        height=vstream.get("height") if vstream else None,
        fps=(_rate(vstream.get("avg_frame_rate")) or _rate(vstream.get("r_frame_rate")))
        if vstream
        else None,
        sample_rate=int(astream["sample_rate"]) if astream and astream.get("sample_rate") else None,
    )


def decode_errors(path: Path) -> str:
    """Messages of ``ffmpeg -v error -i path -f null -`` ('' when the file decodes cleanly)."""
    proc = subprocess.run(
        ["ffmpeg", "-nostdin", "-hide_banner", "-v", "error", "-i", str(path), "-f", "null", "-"],
        capture_output=True,
        text=True,
    )
    out = proc.stderr.strip()
    if proc.returncode != 0 and not out:
        out = f"ffmpeg exited with {proc.returncode}"
    return out


def assert_platform_contract(
    path: Path, fps: float, audio_frame_s: float, min_duration_s: float
) -> MediaReport:
    """Check one recorded platform session against DESIGN.md's output contract.

    ``fps``: the video frame rate sent; ``audio_frame_s``: one audio frame's duration
    (AAC: 1024 / sample_rate). Raises AssertionError naming the failed check, where and by
    how much; returns the probe report when everything holds.
    """
    rep = probe(path)
    name = Path(path).name
    for kind, tl in (("video", rep.video), ("audio", rep.audio)):
        if tl is None or not tl.pts_s:
            raise AssertionError(f"{name}: no {kind} track (or no {kind} packets)")
    if rep.duration_s < min_duration_s:
        raise AssertionError(
            f"{name}: duration {rep.duration_s:.3f} s is shorter than {min_duration_s:.3f} s "
            f"(by {min_duration_s - rep.duration_s:.3f} s)"
        )
    limits = {"video": 2.0 / fps + TIMESTAMP_SLACK_S, "audio": 2.0 * audio_frame_s
              + TIMESTAMP_SLACK_S}
    for kind, tl in (("video", rep.video), ("audio", rep.audio)):
        assert tl is not None
        late_start = tl.start_s - rep.start_s
        if late_start > SPAN_SLACK_S:
            raise AssertionError(
                f"{name}: {kind} starts {late_start:.3f} s after the file start "
                f"(t={rep.start_s:.3f} s; limit {SPAN_SLACK_S} s)"
            )
        early_end = rep.end_s - tl.end_s
        if early_end > SPAN_SLACK_S:
            raise AssertionError(
                f"{name}: {kind} ends {early_end:.3f} s before the file end "
                f"(at t={tl.end_s:.3f} s of {rep.end_s:.3f} s; limit {SPAN_SLACK_S} s)"
            )
        for i in range(1, len(tl.dts_s)):
            if tl.dts_s[i] < tl.dts_s[i - 1]:
                raise AssertionError(
                    f"{name}: {kind} dts goes back at packet {i}: t={tl.dts_s[i - 1]:.3f} s -> "
                    f"{tl.dts_s[i]:.3f} s (by {tl.dts_s[i - 1] - tl.dts_s[i]:.3f} s)"
                )
        gap, at = _gap_location(tl.pts_s)
        if gap > limits[kind]:
            raise AssertionError(
                f"{name}: {kind} timestamp gap of {gap:.3f} s at t={at:.3f} s "
                f"(limit {limits[kind]:.3f} s, over by {gap - limits[kind]:.3f} s)"
            )
    errors = decode_errors(path)
    if errors:
        raise AssertionError(f"{name}: ffmpeg -v error reports decode errors:\n{errors[:2000]}")
    return rep
