"""The connection check (``steadycast probe``), in one package.

- ``wire``: the messages; ``stats``: percentiles and jitter; ``recommend``: bitrate,
  resolution and buffer for the link; ``analysis``: ``ProbeAnalysis``, samples in, figures,
  verdict and reasons out; ``result``: the stored result's schema and validator; ``report``:
  the bilingual report. None of these reads a clock or touches a socket: ``now`` (seconds,
  any monotonic clock) comes in as an argument.
- ``client``: the probe's sender, the only module here with I/O (a WebSocket to the relay).

The relay's endpoints (``relay.web.probe``) and the command (``steadycast.probe_cli``) use
this package and live with their hosts.

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
