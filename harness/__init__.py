"""What tests and benchmarks start on this machine: a local nginx-rtmp platform
(`nginx_platform`), a relay process with its config and free loopback ports
(`local_services`). Depends on no other part of the project."""
