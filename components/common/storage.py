"""S3 access for every step: one client with retries, URI helpers, and directory transfer.

Credentials come from the standard AWS chain (environment, profile, service-account role); the
endpoint comes from the config so the same code talks to AWS, MinIO or the embedded SeaweedFS.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import boto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import ClientError

from components.common.config import StorageConfig


COMPLETE_MARKER = "_COMPLETE"  # written last into a model prefix; readers refuse a prefix without it


class IncompleteModelError(FileNotFoundError):
    """A model prefix without its _COMPLETE marker: a partial upload is never read."""


@dataclass(frozen=True)
class S3Uri:
    bucket: str
    key: str

    @classmethod
    def parse(cls, uri: str) -> "S3Uri":
        if not uri.startswith("s3://"):
            raise ValueError(f"not an s3:// URI: {uri!r}")
        bucket, _, key = uri[5:].partition("/")
        if not bucket:
            raise ValueError(f"s3 URI has no bucket: {uri!r}")
        return cls(bucket, key)

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


def join(base: str, *parts: str) -> str:
    """Join key parts under base. Empty segments ("a//b", a trailing "/", an empty prefix) are dropped;
    a part that would climb out of base (".."), name base itself (".", "/") or that holds a backslash
    or NUL is refused: a name taken from input stays under base or is not used at all."""
    out = base.rstrip("/")
    for part in parts:
        pieces = [p for p in str(part).split("/") if p]
        if (str(part) and not pieces) or any(p in (".", "..") or "\\" in p or "\x00" in p for p in pieces):
            raise ValueError(f"unsafe key part {part!r} under {base!r}: '.', '..', '/', backslash and NUL "
                             "cannot name an object key")
        for piece in pieces:
            out += "/" + piece
    return out


class Store:
    """A thin, retrying wrapper over boto3 for s3:// URIs."""

    def __init__(self, cfg: StorageConfig):
        self.cfg = cfg
        retry = BotoConfig(retries={"max_attempts": cfg.max_attempts, "mode": "standard"}, connect_timeout=10,
                           read_timeout=120)
        # A fresh session per Store: boto3's default session caches the first credentials it
        # resolves, which would outlive a rotated key in a long-lived process.
        self.client = boto3.session.Session().client(
            "s3", endpoint_url=cfg.endpoint_url or None, region_name=cfg.region, config=retry
        )

    @property
    def root(self) -> str:
        return join(f"s3://{self.cfg.bucket}", self.cfg.prefix)

    def ensure_bucket(self) -> None:
        try:
            self.client.head_bucket(Bucket=self.cfg.bucket)
        except ClientError:
            self.client.create_bucket(Bucket=self.cfg.bucket)

    # -- objects -------------------------------------------------------------------------------
    def put_bytes(self, uri: str, data: bytes) -> str:
        """Write the object; returns its ETag (it changes whenever the object is replaced by other bytes)."""
        u = S3Uri.parse(uri)
        return self.client.put_object(Bucket=u.bucket, Key=u.key, Body=data).get("ETag", "").strip('"')

    def get_bytes(self, uri: str) -> bytes:
        u = S3Uri.parse(uri)
        try:
            return self.client.get_object(Bucket=u.bucket, Key=u.key)["Body"].read()
        except ClientError as e:
            raise FileNotFoundError(f"{uri}: {e.response['Error'].get('Code', e)}") from None

    def put_if_absent(self, uri: str, data: bytes) -> bool:
        """Create the object only if no object has that key (S3 `If-None-Match: *`): of several
        writers racing for one key exactly one gets True. The others, and any later call, get False."""
        u = S3Uri.parse(uri)
        try:
            self.client.put_object(Bucket=u.bucket, Key=u.key, Body=data, IfNoneMatch="*")
            return True
        except ClientError as e:
            # 412: the key exists; 409: a concurrent conditional write to it is in progress.
            if e.response.get("ResponseMetadata", {}).get("HTTPStatusCode") in (409, 412):
                return False
            raise

    def delete(self, uri: str) -> None:
        u = S3Uri.parse(uri)
        self.client.delete_object(Bucket=u.bucket, Key=u.key)

    def put_json(self, uri: str, obj) -> None:
        self.put_bytes(uri, json.dumps(obj, indent=2, sort_keys=True, default=str).encode())

    def get_json(self, uri: str):
        return json.loads(self.get_bytes(uri))

    def put_file(self, uri: str, path: str | Path) -> None:
        u = S3Uri.parse(uri)
        self.client.upload_file(str(path), u.bucket, u.key)

    def get_file(self, uri: str, path: str | Path) -> Path:
        u = S3Uri.parse(uri)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.client.download_file(u.bucket, u.key, str(path))
        except ClientError as e:
            raise FileNotFoundError(f"{uri}: {e.response['Error'].get('Code', e)}") from None
        return path

    def exists(self, uri: str) -> bool:
        u = S3Uri.parse(uri)
        try:
            self.client.head_object(Bucket=u.bucket, Key=u.key)
            return True
        except ClientError:
            return False

    def list(self, uri: str) -> list[tuple[str, int]]:
        """(uri, size) of every object under uri (a prefix), sorted by key."""
        return [(o, size) for o, size, _ in self.list_meta(uri)]

    def list_meta(self, uri: str) -> list[tuple[str, int, str]]:
        """(uri, size, ETag) of every object under uri (a prefix), sorted by key."""
        u = S3Uri.parse(uri)
        prefix = u.key.rstrip("/") + "/" if u.key else ""
        out = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=u.bucket, Prefix=prefix):
            out += [(f"s3://{u.bucket}/{o['Key']}", o["Size"], o.get("ETag", "").strip('"'))
                    for o in page.get("Contents", [])]
        return sorted(out)

    def head(self, uri: str) -> tuple[int, str] | None:
        """(size, ETag) of one object, or None when it does not exist."""
        u = S3Uri.parse(uri)
        try:
            r = self.client.head_object(Bucket=u.bucket, Key=u.key)
        except ClientError:
            return None
        return r["ContentLength"], r.get("ETag", "").strip('"')

    def delete_prefix(self, uri: str) -> int:
        """Delete every object under uri (a prefix); returns how many."""
        u = S3Uri.parse(uri)
        keys = [S3Uri.parse(o).key for o, _ in self.list(uri)]
        for i in range(0, len(keys), 1000):  # DeleteObjects takes at most 1000 keys
            self.client.delete_objects(Bucket=u.bucket, Delete={"Objects": [{"Key": k} for k in keys[i:i + 1000]]})
        return len(keys)

    # -- directories ---------------------------------------------------------------------------
    def upload_dir(self, local_dir: str | Path, uri: str) -> list[str]:
        local_dir = Path(local_dir)
        written = []
        for path in sorted(p for p in local_dir.rglob("*") if p.is_file()):
            target = join(uri, PurePosixPath(path.relative_to(local_dir)).as_posix())
            self.put_file(target, path)
            written.append(target)
        return written

    def download_dir(self, uri: str, local_dir: str | Path) -> Path:
        local_dir = Path(local_dir)
        base = uri.rstrip("/") + "/"
        objects = self.list(uri)
        if not objects:
            raise FileNotFoundError(f"{uri}: no objects under this prefix")
        for obj_uri, _ in objects:
            rel = obj_uri[len(base):]
            self.get_file(obj_uri, local_dir / join("", rel).lstrip("/"))
        return local_dir


RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")  # KFP run ids (UUIDs) and mixtune's own names

def run_root(cfg: StorageConfig, pipeline_run: str, artifact_root: str = "") -> str:
    """Where a pipeline run's artifacts live: artifact_root when given, else <bucket>/<prefix>/runs/<run>
    (what a scheduled KFP run uses: its name is only known inside the run)."""
    if artifact_root:
        return artifact_root
    if not RUN_NAME.fullmatch(pipeline_run or ""):
        raise ValueError(f"pipeline run name {pipeline_run!r} cannot name an artifact folder: use letters, digits, "
                         "'.', '_' and '-' (at most 128), starting with a letter or digit")
    return join(f"s3://{cfg.bucket}", cfg.prefix, "runs", pipeline_run)


def require_complete(store: Store, model_uri: str) -> None:
    """Refuse a model prefix whose upload has not finished (its marker is written last)."""
    if not model_uri.startswith("s3://"):
        raise ValueError(f"model URI must be an s3:// prefix, got {model_uri!r}")
    if not store.exists(join(model_uri, COMPLETE_MARKER)):
        raise IncompleteModelError(
            f"{model_uri}: no {COMPLETE_MARKER} marker; the model upload is missing or unfinished, refusing it"
        )
