"""What comes in. ``uplink``: the uplink's WebSocket door (``/ingest/{stream}``, token and
throttle checks); ``session``: the ingest session core that turns a sender's events into
playout units, archive calls and dropout events, for every ingest alike (the uplink today;
RTMP and WHIP next). ``relay.stream.StreamRuntime`` runs a connection's protocol and applies
the session's actions to the stream's output and archive."""
