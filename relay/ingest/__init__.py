"""What comes in: the sender's session turned into playout units, archive calls and dropout
events (`relay.ingest.session`), for every ingest alike (the uplink today; RTMP and WHIP)."""
