"""The link lab: real cellular traces and their formats (`traces`), outage overlays
(`outages`), the link model that the simulator and the emulator share (`link_model`) and the
TCP link emulator (`emulator`). Depends on no other part of the project."""
