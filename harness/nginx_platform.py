"""A real RTMP "platform" for tests and benchmarks: nginx with libnginx-mod-rtmp, in a temp dir.

Every publish session is recorded to its own FLV file (``record_unique on``), so counting
the files of a stream key counts the platform sessions. Caveat: nginx-rtmp names the files
``<key>-<unix seconds>.flv``, so two sessions of one key that *start within the same second*
share one file name and the second truncates the first; :meth:`NginxRtmp.publish_sessions`
(from nginx-rtmp's access log, one line per closed session) counts them regardless.

An optional RTMPS front (``rtmps=True``) is nginx's stream module terminating TLS with a
self-signed certificate for 127.0.0.1 and proxying to the RTMP port.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from harness.local_services import free_port

NGINX_MODULES_DIR = Path("/usr/lib/nginx/modules")
RTMP_MODULE = NGINX_MODULES_DIR / "ngx_rtmp_module.so"
STREAM_MODULE = NGINX_MODULES_DIR / "ngx_stream_module.so"

_ACCESS_FORMAT = "$command|$app|$name|$remote_addr|$bytes_received|$session_time|$msec"


def nginx_binary() -> str | None:
    found = shutil.which("nginx")
    if found:
        return found
    for candidate in ("/usr/sbin/nginx", "/usr/local/sbin/nginx"):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def missing_nginx_rtmp(rtmps: bool = False) -> list[str]:
    """Debian packages needed for :class:`NginxRtmp` that are not installed (empty: all there)."""
    missing = []
    if nginx_binary() is None:
        missing.append("nginx")
    if not RTMP_MODULE.exists():
        missing.append("libnginx-mod-rtmp")
    if rtmps:
        if not STREAM_MODULE.exists():
            missing.append("libnginx-mod-stream")
        if shutil.which("openssl") is None:
            try:
                import cryptography  # noqa: F401
            except ImportError:
                missing.append("openssl")
    return missing


def make_self_signed_cert(cert: Path, key: Path, host: str = "127.0.0.1") -> None:
    """Write a self-signed certificate (with an IP SAN for ``host``) and its key as PEM."""
    if shutil.which("openssl"):
        subprocess.run(
            [
                "openssl", "req", "-x509", "-nodes", "-days", "2",
                "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                "-keyout", str(key), "-out", str(cert),
                "-subj", f"/CN={host}", "-addext", f"subjectAltName=IP:{host}",
            ],
            check=True,
            capture_output=True,
        )
        return
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    pkey = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.UTC)
    crt = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(pkey.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(pkey, hashes.SHA256())
    )
    key.write_bytes(
        pkey.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    cert.write_bytes(crt.public_bytes(serialization.Encoding.PEM))


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


class NginxRtmp:
    """nginx-rtmp on 127.0.0.1 (free port), recording every publish under ``workdir/rec``."""

    def __init__(self, workdir: Path, rtmps: bool = False) -> None:
        self.workdir = Path(workdir)
        self.rtmps = rtmps
        self.port = 0
        self.rtmps_port = 0
        self.record_dir = self.workdir / "rec"
        self.conf_path = self.workdir / "nginx.conf"
        self.error_log = self.workdir / "error.log"
        self.access_log = self.workdir / "rtmp_access.log"
        self.cert_path = self.workdir / "cert.pem"
        self.key_path = self.workdir / "key.pem"
        self._proc: subprocess.Popen[bytes] | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def __enter__(self) -> NginxRtmp:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _config(self) -> str:
        lines = []
        if os.geteuid() == 0:
            lines.append("user root;")
        lines += [
            "daemon off;",
            "master_process on;",
            "worker_processes 1;",  # nginx-rtmp live streams live in one worker
            f"pid {self.workdir / 'nginx.pid'};",
            f"error_log {self.error_log} info;",
            f"load_module {RTMP_MODULE};",
        ]
        if self.rtmps:
            lines.append(f"load_module {STREAM_MODULE};")
        lines += [
            "events { worker_connections 256; }",
            "rtmp {",
            f"    log_format steadycast '{_ACCESS_FORMAT}';",
            f"    access_log {self.access_log} steadycast;",
            "    server {",
            f"        listen 127.0.0.1:{self.port};",
            "        chunk_size 4096;",
            "        application live {",
            "            live on;",
            "            record all;",
            f"            record_path {self.record_dir};",
            "            record_unique on;",
            "        }",
            "    }",
            "}",
        ]
        if self.rtmps:
            lines += [
                "stream {",
                "    server {",
                f"        listen 127.0.0.1:{self.rtmps_port} ssl;",
                f"        ssl_certificate {self.cert_path};",
                f"        ssl_certificate_key {self.key_path};",
                f"        proxy_pass 127.0.0.1:{self.port};",
                "    }",
                "}",
            ]
        return "\n".join(lines) + "\n"

    def start(self, timeout: float = 10.0) -> None:
        if self._proc is not None:
            raise RuntimeError("nginx already started")
        missing = missing_nginx_rtmp(self.rtmps)
        if missing:
            raise RuntimeError(f"missing Debian packages: {', '.join(missing)}")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.record_dir.mkdir(exist_ok=True)
        (self.workdir / "logs").mkdir(exist_ok=True)
        if self.rtmps and not self.cert_path.exists():
            make_self_signed_cert(self.cert_path, self.key_path)
        last_error = ""
        for _attempt in range(3):  # free_port() can race with another process: retry
            self.port = free_port()
            if self.rtmps:
                self.rtmps_port = free_port()
            self.conf_path.write_text(self._config())
            self.error_log.write_text("")
            out = open(self.workdir / "nginx.out", "wb")  # noqa: SIM115
            try:
                self._proc = subprocess.Popen(
                    [nginx_binary() or "nginx", "-c", str(self.conf_path),
                     "-p", str(self.workdir), "-e", str(self.error_log)],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            finally:
                out.close()
            deadline = time.monotonic() + timeout
            ports = [self.port] + ([self.rtmps_port] if self.rtmps else [])
            while time.monotonic() < deadline:
                if self._proc.poll() is not None:
                    break
                if all(_port_open(p) for p in ports):
                    return
                time.sleep(0.05)
            last_error = self._logs()
            self._kill()
            if "Address already in use" not in last_error:
                break
        raise RuntimeError(
            f"nginx-rtmp did not start listening within {timeout} s "
            f"(config {self.conf_path}):\n{last_error}"
        )

    def _logs(self) -> str:
        parts = []
        for p in (self.workdir / "nginx.out", self.error_log):
            if p.exists():
                text = p.read_text(errors="replace").strip()
                if text:
                    parts.append(f"--- {p.name}\n{text[-4000:]}")
        return "\n".join(parts)

    def _kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    def stop(self, grace: float = 3.0) -> None:
        """Graceful quit (SIGQUIT) so that recordings are closed and sessions logged.

        nginx's graceful quit waits for every RTMP connection to end (worker_shutdown_timeout
        does not close them), so a publisher still connected after ``grace`` seconds gets a
        fast shutdown (SIGTERM: its file stays readable, but no access-log line), then SIGKILL.
        """
        proc = self._proc
        if proc is None:
            return
        for sig, wait_s in ((signal.SIGQUIT, grace), (signal.SIGTERM, 3.0)):
            if proc.poll() is not None:
                break
            proc.send_signal(sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(wait_s)
        self._kill()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # -- addresses and results -------------------------------------------------------------

    def url(self, app: str = "live") -> str:
        return f"rtmp://127.0.0.1:{self.port}/{app}"

    def rtmps_url(self, app: str = "live") -> str:
        if not self.rtmps:
            raise RuntimeError("NginxRtmp was created without rtmps=True")
        return f"rtmps://127.0.0.1:{self.rtmps_port}/{app}"

    def recordings(self, key: str) -> list[Path]:
        """Recorded files of stream ``key`` (one per publish session), oldest first."""
        pattern = re.compile(rf"^{re.escape(key)}-(\d+)\.flv$")
        found = []
        if self.record_dir.exists():
            for p in self.record_dir.iterdir():
                m = pattern.match(p.name)
                if m:
                    found.append((int(m.group(1)), p.stat().st_mtime, p.name, p))
        return [item[3] for item in sorted(found)]

    def publish_sessions(self, key: str, app: str = "live") -> list[dict[str, str]]:
        """Closed publish sessions of ``key`` from nginx-rtmp's access log (written at close).

        Each entry has command, app, name, remote_addr, bytes_received, session_time, msec.
        """
        fields = ["command", "app", "name", "remote_addr", "bytes_received", "session_time",
                  "msec"]
        sessions = []
        if self.access_log.exists():
            for line in self.access_log.read_text(errors="replace").splitlines():
                parts = line.split("|")
                if len(parts) != len(fields):
                    continue
                entry = dict(zip(fields, parts, strict=True))
                if "PUBLISH" in entry["command"] and entry["name"] == key and entry["app"] == app:
                    sessions.append(entry)
        return sessions
