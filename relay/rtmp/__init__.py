"""RTMP without I/O: AMF0 values, the chunk stream, FLV tags and the publishing client.

Written from the published specifications: Adobe's "Real-Time Messaging Protocol (RTMP)
specification" 1.0 (2012), "Action Message Format -- AMF 0" (2007) and "Video File Format
Specification" version 10 (FLV). Nothing here touches a socket or a clock: bytes come in and
go out as values, and time comes in as a ``now`` argument.
"""
