"""What goes out: the playout buffer, the output clock (live, freeze or slate; when platform
sessions open and end), the transcode, and each platform destination with its own socket."""
