"""Container harness: a Docker engine, the Dockerfile's base image, a local torch index, the CPU image.

No image registry is reachable from the project machines, so:
- the engine is DOCKER_HOST when one answers, else a `dockerd` this session starts as root (its data
  under .mixtune/docker, kept between runs as the layer cache) and stops at the end;
- the base image (the Dockerfile's FROM, python:3.11-slim) is pulled when a registry answers, else
  built with debootstrap from the apt mirror and tagged with that name. The Dockerfile is never edited;
- torch comes from a PEP 503 index served here on 127.0.0.1 (the local CPU wheel; every other project
  redirects to PyPI), passed as the TORCH_INDEX_URL build argument, the build on the host network;
- pip inside the build reaches PyPI with the host's CA bundle, passed as the build secret `ca`.
Without an engine (no dockerd, not root) the tests that need one are skipped.
"""
from __future__ import annotations

import hashlib
import html
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote

import pytest

REPO = Path(__file__).resolve().parents[2]
CACHE = REPO / ".mixtune" / "docker"  # git-ignored; survives test runs (layer cache, base image)
CPU_DOCKERFILE = REPO / "docker" / "cpu.Dockerfile"
CPU_TAG = "mixtune/cpu:test"
TORCH_VERSION = "2.13.0"
DEBIAN_SUITE = "bookworm"  # python:3.11-slim is Debian bookworm; its python3 is 3.11
BASE_PACKAGES = "python3,python3-venv,python3-pip,python-is-python3,ca-certificates"
PYPI_SIMPLE = "https://pypi.org/simple"


def note(config, text: str) -> None:
    """A line on the terminal even when output is captured (build times, image size)."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if reporter is None:
        return
    if capture is None:
        reporter.write_line(f"[docker] {text}")
        return
    with capture.global_and_fixture_disabled():
        reporter.ensure_newline()
        reporter.write_line(f"[docker] {text}")


def client_binary() -> str | None:
    # Debian's docker.io client builds with BuildKit by itself; a newer client needs the buildx plugin.
    if Path("/usr/bin/docker").exists():
        return "/usr/bin/docker"
    return shutil.which("docker")


def tail(path: Path, lines: int = 60) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"({path} unreadable)"


class Engine:
    def __init__(self, client: str, host: str):
        self.client = client
        self.host = host  # DOCKER_HOST

    def env(self) -> dict[str, str]:
        return {**os.environ, "DOCKER_HOST": self.host, "DOCKER_BUILDKIT": "1"}

    def run(self, *args: str, check: bool = True, timeout: float = 600, **kw) -> subprocess.CompletedProcess:
        kw.setdefault("capture_output", True)
        proc = subprocess.run([self.client, *args], env=kw.pop("env", self.env()), text=True, timeout=timeout, **kw)
        if check and proc.returncode != 0:
            raise AssertionError(f"docker {' '.join(args[:3])} ... exited {proc.returncode}\n"
                                 f"{(proc.stdout or '')[-3000:]}\n{(proc.stderr or '')[-3000:]}")
        return proc

    def answers(self) -> bool:
        try:
            return self.run("version", check=False, timeout=20).returncode == 0
        except subprocess.TimeoutExpired:
            return False

    def has_image(self, ref: str) -> bool:
        return self.run("image", "inspect", ref, check=False).returncode == 0


# -- the engine ---------------------------------------------------------------------------------


def _exec_root() -> Path:
    # Runtime state (containerd's socket among it) in a short path: unix socket paths are limited to 107 bytes.
    return Path(tempfile.gettempdir()) / f"mixtune-dockerd-{hashlib.sha256(str(CACHE).encode()).hexdigest()[:8]}"


def _socket() -> Path:
    sock = CACHE / "docker.sock"
    return sock if len(str(sock)) < 100 else _exec_root() / "docker.sock"


def _start_dockerd(client: str) -> tuple[Engine, subprocess.Popen]:
    dockerd = shutil.which("dockerd") or next((p for p in ("/usr/sbin/dockerd", "/usr/bin/dockerd") if Path(p).exists()), None)
    if dockerd is None:
        pytest.skip("no Docker engine: DOCKER_HOST does not answer and there is no dockerd (apt-get install docker.io)")
    if os.geteuid() != 0:
        pytest.skip("no Docker engine: DOCKER_HOST does not answer and starting dockerd needs root")
    CACHE.mkdir(parents=True, exist_ok=True)
    exec_root = _exec_root()
    exec_root.mkdir(parents=True, exist_ok=True)
    sock = _socket()
    config = CACHE / "daemon.json"
    # Independent of any /etc/docker/daemon.json; the build cache is trimmed to what a rebuild reuses.
    config.write_text(json.dumps({"builder": {"gc": {"enabled": True, "defaultKeepStorage": "10GB"}}}) + "\n")
    log_path = CACHE / "dockerd.log"
    cmd = [dockerd, f"--config-file={config}", f"--data-root={CACHE / 'data'}", f"--exec-root={exec_root}",
           f"--pidfile={exec_root / 'dockerd.pid'}", f"--host=unix://{sock}",
           # Builds and containers here use the host network: no bridge, no iptables rules on the host.
           "--bridge=none", "--iptables=false", "--ip-masq=false", "--ip-forward=false"]
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    engine = Engine(client, f"unix://{sock}")
    deadline = time.time() + 90
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"dockerd exited with {proc.returncode}; {log_path}:\n{tail(log_path)}")
        if sock.exists() and engine.answers():
            return engine, proc
        time.sleep(0.5)
    _stop(proc, exec_root)
    pytest.fail(f"dockerd did not answer within 90 s; {log_path}:\n{tail(log_path)}")


def _stop(proc: subprocess.Popen, exec_root: Path) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)  # dockerd stops its containers and its containerd
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    netns = exec_root / "netns" / "default"  # dockerd leaves its namespace mount behind
    if os.path.ismount(netns):
        subprocess.run(["umount", str(netns)], check=False, capture_output=True)


@pytest.fixture(scope="session")
def docker_engine(request) -> Engine:
    client = client_binary()
    if client is None:
        pytest.skip("no docker client (apt-get install docker.io)")
    if os.environ.get("DOCKER_HOST"):
        engine = Engine(client, os.environ["DOCKER_HOST"])
        if engine.answers():
            yield engine
            return
    engine = Engine(client, f"unix://{_socket()}")
    if _socket().exists() and engine.answers():  # this harness's dockerd, still run by another session
        yield engine
        return
    t0 = time.perf_counter()
    engine, proc = _start_dockerd(client)
    note(request.config, f"dockerd started in {time.perf_counter() - t0:.1f} s ({engine.host})")
    try:
        yield engine
    finally:
        _stop(proc, _exec_root())


# -- the base image -----------------------------------------------------------------------------


def base_image_name(dockerfile: Path) -> str:
    """The default of the Dockerfile's `ARG BASE_IMAGE=...` (its FROM)."""
    m = re.search(r"^ARG BASE_IMAGE=(\S+)", dockerfile.read_text(), re.M)
    assert m, f"{dockerfile}: no `ARG BASE_IMAGE=...`"
    return m.group(1)


def debian_mirror() -> str:
    """The Debian mirror the host's apt uses (deb822 .sources or one-line sources.list)."""
    sources = sorted(Path("/etc/apt/sources.list.d").glob("*.sources")) + [Path("/etc/apt/sources.list")]
    for path in sources:
        try:
            text = path.read_text()
        except OSError:
            continue
        for stanza in re.split(r"\n\s*\n", text):
            uris = re.search(r"^URIs:\s*(\S+)", stanza, re.M)
            suites = re.search(r"^Suites:\s*(.+)$", stanza, re.M)
            if uris and suites and DEBIAN_SUITE in suites.group(1).split() and "security" not in uris.group(1):
                return uris.group(1)
        for line in text.splitlines():  # deb [options] URI SUITE COMPONENT...
            parts = line.split()
            uri = next((i for i, p in enumerate(parts) if "://" in p), None)
            if parts[:1] == ["deb"] and uri is not None and parts[uri + 1:uri + 2] == [DEBIAN_SUITE] \
                    and "security" not in parts[uri]:
                return parts[uri]
    return "http://deb.debian.org/debian"


def debootstrap_base(engine: Engine, name: str, config) -> None:
    debootstrap = shutil.which("debootstrap") or ("/usr/sbin/debootstrap" if Path("/usr/sbin/debootstrap").exists() else None)
    if debootstrap is None or os.geteuid() != 0:
        pytest.skip(f"base image {name} is absent, no registry answers, and building it needs debootstrap as root")
    root = CACHE / "rootfs"
    shutil.rmtree(root, ignore_errors=True)
    log_path = CACHE / "debootstrap.log"
    mirror = debian_mirror()
    t0 = time.perf_counter()
    with open(log_path, "w") as log:
        rc = subprocess.run([debootstrap, "--variant=minbase", f"--include={BASE_PACKAGES}", DEBIAN_SUITE,
                             str(root), mirror], stdout=log, stderr=subprocess.STDOUT, timeout=1200).returncode
    if rc != 0:
        pytest.fail(f"debootstrap {DEBIAN_SUITE} from {mirror} failed ({rc}); {log_path}:\n{tail(log_path)}")
    try:
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):  # downloaded .debs and indexes
            for p in (root / junk).glob("*"):
                if p.is_file():
                    p.unlink()
        tar = subprocess.Popen(["tar", "-C", str(root), "--numeric-owner", "-c", "."], stdout=subprocess.PIPE)
        engine.run("import", "--change", "ENV LANG=C.UTF-8", "--change", 'CMD ["python3"]',
                   "--message", f"debootstrap {DEBIAN_SUITE} minbase + {BASE_PACKAGES} (mixtune test harness)",
                   "-", name, stdin=tar.stdout, timeout=600)
        tar.stdout.close()
        assert tar.wait() == 0, "tar of the debootstrap tree failed"
    finally:
        shutil.rmtree(root, ignore_errors=True)
    note(config, f"base image {name}: debootstrap {DEBIAN_SUITE} from {mirror} + import in {time.perf_counter() - t0:.0f} s")


@pytest.fixture(scope="session")
def base_image(docker_engine, request) -> str:
    """The CPU Dockerfile's FROM image, present in the engine (pulled, or built with debootstrap)."""
    name = base_image_name(CPU_DOCKERFILE)
    if docker_engine.has_image(name):
        return name
    try:
        pulled = docker_engine.run("pull", name, check=False, timeout=300).returncode == 0
    except subprocess.TimeoutExpired:
        pulled = False
    if not pulled:
        debootstrap_base(docker_engine, name, request.config)
    return name


# -- a local PEP 503 index with the CPU torch wheel ---------------------------------------------


def local_torch_wheel() -> Path | None:
    dirs = [Path(d) for d in os.environ.get("PIP_FIND_LINKS", "").split() if d] + [Path("/opt/wheels")]
    for d in dirs:
        found = sorted(d.glob(f"torch-{TORCH_VERSION}+cpu-cp311-cp311-*linux*_x86_64.whl")) if d.is_dir() else []
        if found:
            return found[-1]
    return None


class TorchIndex:
    """/simple/torch/ lists the local wheel; any other project redirects to PyPI (torch's dependencies,
    as the real CPU index serves them too)."""

    def __init__(self, wheel: Path):
        self.wheel = wheel
        digest = hashlib.sha256()
        with open(wheel, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        self.sha256 = digest.hexdigest()
        index = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                path = unquote(self.path.split("?")[0])
                if path.rstrip("/") == "/simple/torch":
                    name = html.escape(index.wheel.name)
                    body = (f'<!DOCTYPE html><html><body><a href="/files/{name}#sha256={index.sha256}">'
                            f"{name}</a></body></html>").encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "text/html")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                elif path == f"/files/{index.wheel.name}":
                    self.send_response(200)
                    self.send_header("Content-Type", "application/octet-stream")
                    self.send_header("Content-Length", str(index.wheel.stat().st_size))
                    self.end_headers()
                    with open(index.wheel, "rb") as f:
                        shutil.copyfileobj(f, self.wfile, 1 << 20)
                elif path.startswith("/simple/") and path.count("/") <= 3:
                    self.send_response(302)
                    self.send_header("Location", f"{PYPI_SIMPLE}/{path[len('/simple/'):].strip('/')}/")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                else:
                    self.send_error(404)

        # A port fixed per checkout when free: the URL is a build argument, so it is part of the
        # build cache key of every step after it; a new port each run would rebuild them all.
        port = 20000 + int(hashlib.sha256(str(REPO).encode()).hexdigest(), 16) % 20000
        try:
            self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        except OSError:
            self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/simple"

    def __enter__(self) -> "TorchIndex":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="session")
def torch_index_url():
    """A local index for the CPU torch wheel when one lies in PIP_FIND_LINKS or /opt/wheels; else None
    (the build uses the Dockerfile's default, download.pytorch.org)."""
    wheel = local_torch_wheel()
    if wheel is None:
        yield None
        return
    with TorchIndex(wheel) as index:
        yield index.url


def ca_bundle() -> Path | None:
    for candidate in (os.environ.get("PIP_CERT"), os.environ.get("REQUESTS_CA_BUNDLE"),
                      os.environ.get("SSL_CERT_FILE"), "/etc/ssl/certs/ca-certificates.crt"):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


@pytest.fixture(scope="session")
def host_ca_bundle() -> Path | None:
    """The CA bundle the host's pip uses, handed to builds as the secret `ca`."""
    return ca_bundle()


# -- the CPU image ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def cpu_image(docker_engine, base_image, torch_index_url, host_ca_bundle, request) -> str:
    """docker/cpu.Dockerfile built as mixtune/cpu:test (cached layers make a rebuild take seconds)."""
    cmd = ["build", "--progress=plain", "--network=host", "-f", str(CPU_DOCKERFILE), "-t", CPU_TAG]
    if host_ca_bundle is not None:
        cmd += ["--secret", f"id=ca,src={host_ca_bundle}"]
    if torch_index_url is not None:
        cmd += ["--build-arg", f"TORCH_INDEX_URL={torch_index_url}"]
    log_path = CACHE / "build-cpu.log"
    t0 = time.perf_counter()
    with open(log_path, "w") as log:
        proc = docker_engine.run(*cmd, str(REPO), check=False, timeout=3600, capture_output=False,
                                 stdout=log, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        pytest.fail(f"docker build -f {CPU_DOCKERFILE.name} failed after {seconds:.0f} s; {log_path}:\n{tail(log_path)}")
    size = int(docker_engine.run("image", "inspect", "-f", "{{.Size}}", CPU_TAG).stdout.strip())
    note(request.config, f"{CPU_TAG} built in {seconds:.0f} s, {size / 1e9:.2f} GB (log: {log_path})")
    return CPU_TAG
