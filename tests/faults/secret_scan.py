"""Find credentials where they must never be: text, files, directory trees, S3 objects, MLflow.

Each function takes the secrets to look for (a list of strings, or a {name: secret} mapping so findings
say which one) and returns Findings: where, which secret (masked, never the secret itself), and in what
form. A secret is looked for as its raw bytes, percent-encoded, and base64-encoded (standard and URL-safe,
at the three byte alignments, so it is also found inside a longer encoded string such as a Basic auth
header or a docker config). Files are read as bytes (binary-safe); gzip and zip contents are searched
too. Not decoded: other compressions (parquet pages, zstd, ...) and encryption.

    findings = scan_tree(log_dir, secrets) + scan_store(store, store.root, secrets)
    findings += scan_mlflow(cfg.tracking.uri, secrets)
    assert not findings, "\\n".join(map(str, findings))
"""
from __future__ import annotations

import base64
import gzip
import io
import json
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping
from urllib.parse import quote

MIN_ENCODED = 12  # shortest encoded fragment worth matching (shorter ones match noise)
CHUNK = 8 << 20
MAX_NESTED = 256 << 20  # gzip/zip contents larger than this are not decompressed


@dataclass(frozen=True)
class Finding:
    where: str  # a file path, s3:// URI or MLflow location (and member/offset); secrets in it are masked
    secret: str  # which secret: its name, or its masked form
    form: str  # plain, url-quoted, base64, base64url

    def __str__(self) -> str:
        return f"{self.where}: {self.secret} ({self.form})"


def mask(secret: str) -> str:
    """What a report may show of a secret: a few leading characters and the length."""
    return f"{secret[:3]}...({len(secret)} chars)" if len(secret) >= 12 else f"***({len(secret)} chars)"


class Patterns:
    """The byte patterns of every secret in every form."""

    def __init__(self, secrets: Iterable[str] | Mapping[str, str]):
        named = dict(secrets) if isinstance(secrets, Mapping) else {mask(s): s for s in secrets}
        self.secrets = {name: s for name, s in named.items() if s}
        if not self.secrets:
            raise ValueError("no secrets to look for")
        self.patterns: list[tuple[bytes, str, str]] = []  # (pattern, label, form)
        for name, secret in self.secrets.items():
            label = f"{name} [{mask(secret)}]" if isinstance(secrets, Mapping) else name
            raw = secret.encode()
            forms = {raw: "plain"}
            forms.setdefault(quote(secret, safe="").encode(), "url-quoted")
            for k in range(3):  # the secret at each alignment inside a longer base64 text
                part = raw[k:]
                part = part[:len(part) // 3 * 3]
                enc = base64.b64encode(part).rstrip(b"=")
                if len(enc) >= MIN_ENCODED:
                    forms.setdefault(enc, "base64")
                    forms.setdefault(base64.urlsafe_b64encode(part).rstrip(b"="), "base64url")
            whole = base64.b64encode(raw).rstrip(b"=")  # short secrets: only their encoding on its own
            forms.setdefault(whole, "base64")
            forms.setdefault(base64.urlsafe_b64encode(raw).rstrip(b"="), "base64url")
            self.patterns += [(p, label, form) for p, form in forms.items() if p]
        self.longest = max(len(p) for p, _, _ in self.patterns)

    def redact(self, text: str) -> str:
        for secret in self.secrets.values():
            text = text.replace(secret, mask(secret))
        return text

    def search(self, data: bytes, where: str) -> list[Finding]:
        out, seen = [], set()
        for pattern, label, form in self.patterns:
            if pattern in data and (label, form) not in seen:
                seen.add((label, form))
                out.append(Finding(self.redact(where), label, form))
        return out


def _patterns(secrets) -> Patterns:
    return secrets if isinstance(secrets, Patterns) else Patterns(secrets)


def _nested(data: bytes, where: str, p: Patterns, depth: int = 0) -> list[Finding]:
    """Search inside gzip and zip data (a compressed log, a zipped artifact)."""
    if depth > 3:
        return []
    out: list[Finding] = []
    try:
        if data[:2] == b"\x1f\x8b":
            with gzip.GzipFile(fileobj=io.BytesIO(data)) as g:
                inner = g.read(MAX_NESTED)
            out += p.search(inner, f"{where}!gunzip") + _nested(inner, f"{where}!gunzip", p, depth + 1)
        elif data[:4] == b"PK\x03\x04":
            with zipfile.ZipFile(io.BytesIO(data)) as z:
                for info in z.infolist():
                    if info.is_dir() or info.file_size > MAX_NESTED:
                        continue
                    inner = z.read(info)
                    name = f"{where}!{info.filename}"
                    out += p.search(info.filename.encode(), f"{name} (member name)")
                    out += p.search(inner, name) + _nested(inner, name, p, depth + 1)
    except (OSError, EOFError, zipfile.BadZipFile, RuntimeError):
        pass  # not really compressed (or damaged): the raw bytes were searched already
    return out


def _scan_stream(read, where: str, secrets) -> tuple[list[Finding], bytes]:
    """Search a stream given by its read(n) function, in chunks that overlap by a pattern's length;
    (findings, the stream's first bytes)."""
    p = _patterns(secrets)
    found: dict[tuple[str, str], Finding] = {}
    head, tail = b"", b""
    while True:
        chunk = read(CHUNK)
        if not chunk:
            break
        if len(head) < 4:
            head += chunk[:4]
        window = tail + chunk
        for f in p.search(window, where):
            found.setdefault((f.secret, f.form), f)
        tail = window[-(p.longest - 1):] if p.longest > 1 else b""
    return list(found.values()), head


def scan_bytes(data: bytes, where: str, secrets) -> list[Finding]:
    p = _patterns(secrets)
    return p.search(data, where) + _nested(data, where, p)


def scan_text(text: str, secrets, where: str = "<text>") -> list[Finding]:
    return scan_bytes(text.encode("utf-8", "surrogateescape"), where, secrets)


def scan_file(path: str | Path, secrets, where: str | None = None) -> list[Finding]:
    """A file's bytes (and, if it is gzip or zip, what it contains)."""
    p, path = _patterns(secrets), Path(path)
    where = where or str(path)
    with open(path, "rb") as f:
        found, head = _scan_stream(f.read, where, p)
    if head[:2] == b"\x1f\x8b" or head[:4] == b"PK\x03\x04":
        found += _nested(path.read_bytes(), where, p)
    return found


def scan_tree(root: str | Path, secrets) -> list[Finding]:
    """Every file under root, recursively (symlinks are not followed), and every file and folder name."""
    p, root = _patterns(secrets), Path(root)
    if root.is_file():
        return scan_file(root, p)
    out: list[Finding] = []
    for path in sorted(root.rglob("*")):
        out += p.search(str(path.relative_to(root)).encode(), f"{path} (name)")
        if path.is_file() and not path.is_symlink():
            out += scan_file(path, p)
    return out


def scan_store(store, uri: str, secrets) -> list[Finding]:
    """Every object under an s3:// prefix (components.common.storage.Store): its key and its bytes."""
    from components.common.storage import S3Uri

    p = _patterns(secrets)
    out: list[Finding] = []
    for obj_uri, size in store.list(uri):
        out += p.search(obj_uri.encode(), f"{obj_uri} (key)")
        u = S3Uri.parse(obj_uri)
        body = store.client.get_object(Bucket=u.bucket, Key=u.key)["Body"]
        found, head = _scan_stream(body.read, obj_uri, p)
        out += found
        if (head[:2] == b"\x1f\x8b" or head[:4] == b"PK\x03\x04") and size <= MAX_NESTED:
            out += _nested(store.get_bytes(obj_uri), obj_uri, p)
    return out


def _fields(p: Patterns, where: str, fields: Mapping[str, object] | None, kind: str) -> list[Finding]:
    out: list[Finding] = []
    for key, value in (fields or {}).items():
        out += p.search(str(key).encode(), f"{where} {kind} key {key!r}")
        out += scan_bytes(str(value).encode("utf-8", "surrogateescape"), f"{where} {kind} {key!r}", p)
    return out


def _artifacts(p: Patterns, where: str, tmp: Path, **source) -> list[Finding]:
    """Download every artifact of a run (or model) and scan the files."""
    import mlflow

    dst = Path(tempfile.mkdtemp(dir=tmp))
    try:
        local = mlflow.artifacts.download_artifacts(dst_path=str(dst), **source)
    except Exception as e:  # noqa: BLE001 - nothing logged is fine; anything else is a scan failure
        if "No such file" in str(e) or "does not exist" in str(e) or "RESOURCE_DOES_NOT_EXIST" in str(e):
            return []
        raise
    return [Finding(f"{where} artifact {f.where.replace(str(local).rstrip('/') + '/', '')}", f.secret, f.form)
            for f in scan_tree(local, p)]


def _all_pages(search, *args):
    token = None
    while True:
        page = search(*args, page_token=token) if token else search(*args)
        yield from page
        token = page.token
        if not token:
            return


def scan_mlflow(tracking_uri: str, secrets, artifacts: bool = True) -> list[Finding]:
    """Everything an MLflow server holds that a run or the registry wrote: every experiment (name, tags),
    every run in it, active or deleted (name, params, tags, metric keys, dataset inputs, every artifact
    file), every logged model (params, tags), and every registered model (description, tags, aliases)
    and version (source, description, tags)."""
    import mlflow
    from mlflow.entities import ViewType
    from mlflow.tracking import MlflowClient

    p = _patterns(secrets)
    client = MlflowClient(tracking_uri=tracking_uri)
    site = f"mlflow {p.redact(tracking_uri)}"
    out = p.search(tracking_uri.encode(), f"{site} (tracking URI)")
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(tracking_uri)  # mlflow.artifacts resolves runs:/ through the current URI
    try:
        with tempfile.TemporaryDirectory(prefix="secret-scan-") as tmp:
            for exp in client.search_experiments(view_type=ViewType.ALL):
                where = f"{site} experiment {exp.name!r}"
                out += p.search(f"{exp.name}\n{exp.artifact_location}".encode(), where)
                out += _fields(p, where, exp.tags, "tag")
                token = None
                while True:
                    runs = client.search_runs([exp.experiment_id], run_view_type=ViewType.ALL, max_results=500,
                                              page_token=token)
                    for run in runs:
                        rw = f"{where} run {run.info.run_id}"
                        out += p.search((run.info.run_name or "").encode(), f"{rw} name")
                        out += _fields(p, rw, run.data.params, "param")
                        out += _fields(p, rw, run.data.tags, "tag")
                        out += p.search("\n".join(run.data.metrics).encode(), f"{rw} metric keys")
                        for ds in getattr(run.inputs, "dataset_inputs", None) or []:
                            d = ds.dataset
                            out += scan_text(json.dumps({k: getattr(d, k, None) for k in (
                                "name", "digest", "source_type", "source", "schema", "profile")}, default=str), p,
                                f"{rw} dataset input {d.name!r}")
                        if artifacts:
                            out += _artifacts(p, rw, Path(tmp), run_id=run.info.run_id, tracking_uri=tracking_uri)
                    token = runs.token
                    if not token:
                        break
                if hasattr(client, "search_logged_models"):  # MLflow 3
                    for lm in client.search_logged_models(experiment_ids=[exp.experiment_id]):
                        lw = f"{where} logged model {lm.model_id}"
                        out += p.search(f"{lm.name}\n{getattr(lm, 'source_run_id', '')}".encode(), lw)
                        out += _fields(p, lw, lm.params, "param")
                        out += _fields(p, lw, lm.tags, "tag")
            for rm in _all_pages(client.search_registered_models):
                rmw = f"{site} registered model {rm.name!r}"
                out += scan_text(f"{rm.name}\n{rm.description or ''}", p, f"{rmw} name/description")
                out += _fields(p, rmw, rm.tags, "tag")
                out += _fields(p, rmw, getattr(rm, "aliases", None), "alias")
                for mv in _all_pages(client.search_model_versions, f"name = '{rm.name}'"):
                    vw = f"{rmw} version {mv.version}"
                    out += scan_text(f"{mv.source}\n{mv.run_link or ''}", p, f"{vw} source")
                    out += scan_text(mv.description or "", p, f"{vw} description")
                    out += _fields(p, vw, mv.tags, "tag")
    finally:
        mlflow.set_tracking_uri(previous)
    return out
