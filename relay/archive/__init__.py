"""The recording: media in seq order into MPEG-TS parts, checkpoints that say what is kept
(and so what may be acknowledged), and the resume after a restart."""
