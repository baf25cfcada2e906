"""`RecordingCheckpoint`: where a stream's archive stands, saved in ``state_dir`` so that a
relay that was killed continues the session's archive after a restart.

One small JSON file per stream, ``state_dir/recording/{stream}.json``, replaced atomically
(written to a temporary file, then ``os.replace``, POSIX rename semantics: a reader sees the
old file or the new one, never a mix). It says: every seq below ``kept_seq`` of session
``session_id`` is in the archive, in parts up to ``file``, whose first ``file_bytes`` bytes hold
them; ``muxed_below_kept`` counts, per track, the units of that part below ``kept_seq`` (the
part may hold a few more, written out of seq order by the muxer's interleaving: the restart
counts the packets in the file and skips those when they are resent). Track configs are stored
as the uplink's own TRACK messages (base64), so they are validated by the strict wire parser.

The parser is strict like the wire's: anything unexpected raises ``CheckpointError`` naming
what was wrong; it never returns a half-valid checkpoint.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from uplink import (
    MAX_SEQ,
    MAX_TRACK_ID,
    SESSION_ID_BYTES,
    ProtocolError,
    TrackConfig,
    decode,
    encode,
)

CHECKPOINT_VERSION = 1
MAX_CHECKPOINT_BYTES = 64 * 1024  # a checkpoint is a few hundred bytes; refuse anything big
_KEYS = {"version", "session_id", "kept_seq", "tracks", "file", "file_bytes", "part",
         "muxed_below_kept"}


class CheckpointError(ValueError):
    """A checkpoint file that cannot be trusted; the message says what was wrong."""


@dataclass(frozen=True)
class RecordingCheckpoint:
    session_id: bytes
    kept_seq: int  # every seq below it is in the archive
    tracks: tuple[TrackConfig, ...]  # the configs the current part was opened with
    file: str  # the current part's file name, inside record_dir/{stream}/ ("" between parts)
    file_bytes: int  # its size when kept_seq was reached
    part: int  # its part number (1 = the session's first file)
    muxed_below_kept: dict[int, int]  # track_id -> units of the part below kept_seq


def checkpoint_path(state_dir: Path, stream: str) -> Path:
    return state_dir / "recording" / f"{stream}.json"


def encode_checkpoint(cp: RecordingCheckpoint) -> bytes:
    return json.dumps({
        "version": CHECKPOINT_VERSION,
        "session_id": cp.session_id.hex(),
        "kept_seq": cp.kept_seq,
        "tracks": [base64.b64encode(encode(t)).decode() for t in cp.tracks],
        "file": cp.file,
        "file_bytes": cp.file_bytes,
        "part": cp.part,
        "muxed_below_kept": {str(k): v for k, v in sorted(cp.muxed_below_kept.items())},
    }, separators=(",", ":")).encode()


def decode_checkpoint(data: bytes) -> RecordingCheckpoint:
    """Parse a checkpoint; CheckpointError names the first problem."""
    if len(data) > MAX_CHECKPOINT_BYTES:
        raise CheckpointError(f"checkpoint is {len(data)} bytes (max {MAX_CHECKPOINT_BYTES})")
    try:
        obj = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise CheckpointError(f"checkpoint is not JSON: {exc}") from None
    if not isinstance(obj, dict) or set(obj) != _KEYS:
        raise CheckpointError(f"checkpoint must be an object with keys {sorted(_KEYS)}")
    if obj["version"] != CHECKPOINT_VERSION:
        raise CheckpointError(f"checkpoint version {obj['version']!r} is not "
                              f"{CHECKPOINT_VERSION}")
    sid = obj["session_id"]
    if not isinstance(sid, str) or len(sid) != 2 * SESSION_ID_BYTES:
        raise CheckpointError("checkpoint session_id must be 32 hex digits")
    try:
        session_id = bytes.fromhex(sid)
    except ValueError:
        raise CheckpointError("checkpoint session_id must be 32 hex digits") from None
    kept_seq = _int(obj, "kept_seq", 0, MAX_SEQ + 1)
    file_bytes = _int(obj, "file_bytes", 0, 2**63 - 1)
    part = _int(obj, "part", 1, 2**31 - 1)
    name = obj["file"]
    if not isinstance(name, str) or (name and (
            not name.endswith(".ts") or "/" in name or "\\" in name or name.startswith(".")
            or "\x00" in name or len(name) > 255)):
        raise CheckpointError("checkpoint file must be a plain .ts file name (or empty)")
    raw_tracks = obj["tracks"]
    if not isinstance(raw_tracks, list) or len(raw_tracks) > MAX_TRACK_ID + 1:
        raise CheckpointError(f"checkpoint tracks must be a list of at most {MAX_TRACK_ID + 1}")
    tracks: list[TrackConfig] = []
    for i, raw in enumerate(raw_tracks):
        try:
            msg = decode(base64.b64decode(raw, validate=True)) if isinstance(raw, str) else None
        except (binascii.Error, ValueError, ProtocolError) as exc:
            raise CheckpointError(f"checkpoint track {i}: {exc}") from None
        if not isinstance(msg, TrackConfig):
            raise CheckpointError(f"checkpoint track {i} is not a TRACK message")
        tracks.append(msg)
    if len({t.track_id for t in tracks}) != len(tracks):
        raise CheckpointError("checkpoint tracks repeat a track_id")
    counts = obj["muxed_below_kept"]
    if not isinstance(counts, dict):
        raise CheckpointError("checkpoint muxed_below_kept must be an object")
    muxed: dict[int, int] = {}
    for key, value in counts.items():
        if key not in {str(t.track_id) for t in tracks}:
            raise CheckpointError(f"checkpoint muxed_below_kept has unknown track {key[:8]!r}")
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**63:
            raise CheckpointError(f"checkpoint muxed_below_kept[{key}] must be a count")
        muxed[int(key)] = value
    return RecordingCheckpoint(session_id, kept_seq, tuple(tracks), name, file_bytes, part,
                               muxed)


def save_checkpoint(path: Path, cp: RecordingCheckpoint, fsync: bool = False) -> None:
    """Write atomically (temporary file + os.replace); `fsync`: to the disk, not just to the
    kernel (survives a power loss, not only a killed process)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as f:
        f.write(encode_checkpoint(cp))
        if fsync:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> RecordingCheckpoint | None:
    """The saved checkpoint, None when there is none; CheckpointError when it is bad."""
    try:
        with path.open("rb") as f:
            data = f.read(MAX_CHECKPOINT_BYTES + 1)
    except FileNotFoundError:
        return None
    return decode_checkpoint(data)


def remove_checkpoint(path: Path) -> None:
    """The session ended cleanly: nothing to continue after a restart."""
    path.unlink(missing_ok=True)


def _int(obj: dict[str, Any], key: str, low: int, high: int) -> int:
    value = obj[key]
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise CheckpointError(f"checkpoint {key} must be an integer in {low}..{high}")
    return value
