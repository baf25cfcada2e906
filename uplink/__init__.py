"""The uplink: one encoded stream from the encoder to the relay, reliable and resumable.

Sans-I/O: `wire` (messages, encode/decode), `UplinkSender` (encoder side) and
`UplinkReceiver` (relay side) take bytes and `now` in and give bytes and events back.
`Spool` is the seq-keyed byte store (memory, then a spill file) that holds the sender's
unacknowledged payloads; the relay's recorder reuses it. ``uplink.media`` (imported on its
own) holds the media conventions both ends share: AAC framing, libx264's options, sizes.
The specification is docs/uplink-protocol.md.
"""

from .errors import MAX_CLOSE_REASON_BYTES, CloseCode, ProtocolError
from .receiver import (
    ACK_EVERY_MEDIA,
    ACK_INTERVAL_S_DEFAULT,
    ARRIVAL_WINDOW_S,
    MAX_SEQ_AHEAD,
    MediaReceived,
    ReceiverEvent,
    SessionEnded,
    SessionStarted,
    StatsReceived,
    TrackConfigured,
    UplinkReceiver,
)
from .sender import Acked, RemoteBye, SenderEvent, UplinkSender, Welcomed
from .spool import DISK_LIMIT_BYTES_DEFAULT, MEMORY_LIMIT_BYTES_DEFAULT, Spool, SpoolFull
from .wire import (
    MAX_BYE_REASON_BYTES,
    MAX_EXTRADATA_BYTES,
    MAX_MESSAGE_BYTES,
    MAX_PAYLOAD_BYTES,
    MAX_SACK_RANGES,
    MAX_SEQ,
    MAX_TRACK_ID,
    MEDIA_HEADER_BYTES,
    PROTOCOL_VERSION,
    SESSION_ID_BYTES,
    Ack,
    Bye,
    Codec,
    Hello,
    Media,
    Message,
    MessageType,
    SenderStats,
    TrackConfig,
    TrackKind,
    Welcome,
    decode,
    encode,
)

__all__ = [
    "ACK_EVERY_MEDIA",
    "ACK_INTERVAL_S_DEFAULT",
    "ARRIVAL_WINDOW_S",
    "DISK_LIMIT_BYTES_DEFAULT",
    "MAX_BYE_REASON_BYTES",
    "MAX_CLOSE_REASON_BYTES",
    "MAX_EXTRADATA_BYTES",
    "MAX_MESSAGE_BYTES",
    "MAX_PAYLOAD_BYTES",
    "MAX_SACK_RANGES",
    "MAX_SEQ",
    "MAX_SEQ_AHEAD",
    "MAX_TRACK_ID",
    "MEDIA_HEADER_BYTES",
    "MEMORY_LIMIT_BYTES_DEFAULT",
    "PROTOCOL_VERSION",
    "SESSION_ID_BYTES",
    "Ack",
    "Acked",
    "Bye",
    "CloseCode",
    "Codec",
    "Hello",
    "Media",
    "MediaReceived",
    "Message",
    "MessageType",
    "ProtocolError",
    "ReceiverEvent",
    "RemoteBye",
    "SenderEvent",
    "SenderStats",
    "SessionEnded",
    "SessionStarted",
    "Spool",
    "SpoolFull",
    "StatsReceived",
    "TrackConfig",
    "TrackConfigured",
    "TrackKind",
    "UplinkReceiver",
    "UplinkSender",
    "Welcome",
    "Welcomed",
    "decode",
    "encode",
]
