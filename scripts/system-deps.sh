#!/usr/bin/env bash
# Installs the Debian packages the tests need (a real RTMP server, ffmpeg, iperf3, chromium) when
# missing.
set -euo pipefail
need=()
command -v nginx >/dev/null 2>&1 || need+=(nginx)
[ -e /usr/lib/nginx/modules/ngx_rtmp_module.so ] || need+=(libnginx-mod-rtmp)
[ -e /usr/lib/nginx/modules/ngx_stream_module.so ] || need+=(libnginx-mod-stream)
command -v ffmpeg >/dev/null 2>&1 || need+=(ffmpeg)
command -v ffprobe >/dev/null 2>&1 || need+=(ffmpeg)
command -v iperf3 >/dev/null 2>&1 || need+=(iperf3)  # the link emulator's fidelity test
command -v chromium >/dev/null 2>&1 || need+=(chromium)  # the dashboard's browser test
if [ ${#need[@]} -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "steadycast tests need these Debian packages: ${need[*]}" >&2
    echo "run as root, or install them first: sudo apt-get install -y ${need[*]}" >&2
    exit 1
fi
echo "installing Debian packages: ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
