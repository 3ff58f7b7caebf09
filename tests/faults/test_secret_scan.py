"""The credential scanner (tests/faults/secret_scan.py) finds a planted secret in every kind of place it
searches, in every form it looks for, and reports nothing on clean data; its reports never show a secret.
Real fixtures: the SeaweedFS S3 server (its own keys are the secrets) and a SQLite MLflow store with
artifacts in that S3."""
from __future__ import annotations

import base64
import gzip
import io
import json
import os
import secrets as random_secrets
import zipfile
from urllib.parse import quote

from components.common.storage import join
from tests.faults import secret_scan as scan

ACCESS = "mx" + random_secrets.token_hex(8)
SECRET = random_secrets.token_urlsafe(24) + "+/="  # characters that base64 and URLs treat specially
KEYS = {"access key": ACCESS, "secret key": SECRET}


def leaked(findings: list[scan.Finding], *secrets: str) -> list[str]:
    """Reports that show a secret (they must not)."""
    text = "\n".join(map(str, findings))
    return [s for s in secrets if s in text]


def where(findings: list[scan.Finding]) -> set[tuple[str, str, str]]:
    return {(f.where, f.secret, f.form) for f in findings}


def test_text_files_and_trees(tmp_path, record):
    clean = tmp_path / "clean"
    (clean / "logs" / "deep").mkdir(parents=True)
    (clean / "logs" / "train.log").write_text("step 1 loss 3.2\nAWS_ACCESS_KEY_ID=***\n")
    (clean / "logs" / "deep" / "weights.bin").write_bytes(os.urandom(1 << 16))
    (clean / "config.json").write_text(json.dumps({"storage": {"bucket": "b", "endpoint_url": "http://s3"}}))
    assert scan.scan_tree(clean, KEYS) == [] and scan.scan_text("nothing here", KEYS) == []

    dirty = tmp_path / "dirty"
    (dirty / "a" / "b").mkdir(parents=True)
    (dirty / "a" / "b" / "blob.bin").write_bytes(os.urandom(5000) + b"\x00" + ACCESS.encode() + b"\xff" * 3)
    header = base64.b64encode(f"user:{SECRET}".encode()).decode()
    (dirty / "a" / "request.log").write_text(f"GET / HTTP/1.1\nAuthorization: Basic {header}\n")
    (dirty / "a" / "url.txt").write_text(f"s3://x?key={quote(SECRET, safe='')}")
    (dirty / "events.log.gz").write_bytes(gzip.compress(f"export AWS_SECRET_ACCESS_KEY={SECRET}\n".encode()))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("inner/creds.json", json.dumps({"key": ACCESS}))
    (dirty / "bundle.zip").write_bytes(buf.getvalue())
    big = dirty / "big.bin"  # a secret straddling the stream's chunk boundary
    big.write_bytes(b"\x00" * (scan.CHUNK - 5) + ACCESS.encode() + b"\x00" * 10)
    found = scan.scan_tree(dirty, KEYS)
    expected = {  # (file, which secret, form)
        ("blob.bin", "access key", "plain"), ("request.log", "secret key", "base64"),
        ("url.txt", "secret key", "url-quoted"), ("events.log.gz!gunzip", "secret key", "plain"),
        ("bundle.zip!inner/creds.json", "access key", "plain"), ("big.bin", "access key", "plain"),
    }
    missing = {(name, which, form) for name, which, form in expected if not any(
        f.where.endswith("/" + name) and f.secret.startswith(which) and f.form == form for f in found)}
    shown = leaked(found, ACCESS, SECRET)
    record("secret scan: files in a tree (raw, binary, base64, url-quoted, gzip, zip, chunk edge)",
           "each planted secret found, none on clean files, report masked",
           f"{len(expected) - len(missing)}/{len(expected)} found" + (f", missed {missing}" if missing else "")
           + f"; {len(shown)} unmasked", not missing and not shown)

    # Plain lists work too (findings name the secret by its mask), and text is scanned as given.
    assert scan.scan_text(f"token {SECRET} end", [SECRET])[0].secret == scan.mask(SECRET)
    assert scan.scan_file(dirty / "a" / "request.log", [ACCESS]) == []


def test_base64_at_every_alignment():
    for prefix in ("", "a", "ab", "abc", "{\"auth\":\""):
        blob = base64.b64encode(f"{prefix}{SECRET}tail".encode())
        assert {f.form for f in scan.scan_bytes(blob, "b64", [SECRET])} == {"base64"}, prefix
        url = base64.urlsafe_b64encode(f"{prefix}{SECRET}".encode())
        assert any(f.form in ("base64url", "base64") for f in scan.scan_bytes(url, "b64url", [SECRET])), prefix


def test_s3_and_mlflow(s3_server, tiny_config, store, monkeypatch, tmp_path, record):
    from mlflow.tracking import MlflowClient

    from components.common import tracking

    keys = {"S3 access key": s3_server.access_key, "S3 secret key": s3_server.secret_key}
    uri = tiny_config.tracking.uri
    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", s3_server.endpoint)  # restored after the test
    exp_id = tracking.setup(tiny_config)
    client = MlflowClient(uri)
    model_name = "secret-scan-model"

    # Clean data, as a step writes it.
    store.put_json(join(store.root, "clean", "manifest.json"), {"rows": 3, "endpoint": s3_server.endpoint})
    store.put_bytes(join(store.root, "clean", "shard.bin"), os.urandom(4096))
    run = client.create_run(exp_id, run_name="train")
    client.log_param(run.info.run_id, "learning_rate", "0.001")
    client.set_tag(run.info.run_id, "mixtune.step", "train")
    client.log_metric(run.info.run_id, "loss", 1.5)
    client.log_text(run.info.run_id, "step 1 loss 1.5\n", "logs/train.log")
    client.set_terminated(run.info.run_id)
    client.create_registered_model(model_name, description="summaries")
    mv = client.create_model_version(model_name, source=join(store.root, "clean"), run_id=run.info.run_id,
                                     tags={"mixtune.primary": "rougeL"}, description="v1")
    clean = scan.scan_store(store, store.root, keys) + scan.scan_mlflow(uri, keys)
    record("secret scan: clean S3 prefix and MLflow store", "nothing found", f"{len(clean)} findings", not clean)

    # Plant a key in each kind of place.
    access, secret = s3_server.access_key, s3_server.secret_key
    store.put_json(join(store.root, "leak", "job.json"), {"env": {"AWS_SECRET_ACCESS_KEY": secret}})
    docker = base64.b64encode(f"{access}:{secret}".encode()).decode()
    store.put_bytes(join(store.root, "leak", "docker.json.gz"),
                    gzip.compress(json.dumps({"auths": {"r": {"auth": docker}}}).encode()))
    bad = client.create_run(exp_id, run_name="leaky")
    client.log_param(bad.info.run_id, "storage.secret", secret)
    client.set_tag(bad.info.run_id, "env", f"AWS_ACCESS_KEY_ID={access}")
    client.log_text(bad.info.run_id, f"boto3 client created with {secret}\n", "logs/worker.log")
    client.set_model_version_tag(model_name, mv.version, "creds", access)
    client.update_model_version(model_name, mv.version, description=f"key {secret}")
    client.update_registered_model(model_name, description=f"uses {access}")

    s3_found = scan.scan_store(store, store.root, keys)
    ml_found = scan.scan_mlflow(uri, keys)
    everything = s3_found + ml_found
    run_at = f"run {bad.info.run_id}"
    expected = {
        "S3 object (plain)": lambda f: f.where.endswith("leak/job.json") and f.form == "plain",
        "S3 object (gzip, base64)": lambda f: "docker.json.gz!gunzip" in f.where and f.form == "base64",
        "MLflow param": lambda f: run_at in f.where and "param 'storage.secret'" in f.where,
        "MLflow tag": lambda f: run_at in f.where and "tag 'env'" in f.where,
        "MLflow artifact": lambda f: run_at in f.where and f.where.endswith("artifact logs/worker.log"),
        "MLflow artifact in S3": lambda f: "mlflow-artifacts" in f.where and f.where.endswith("logs/worker.log"),
        "model version tag": lambda f: f"version {mv.version} tag 'creds'" in f.where,
        "model version description": lambda f: f"version {mv.version} description" in f.where,
        "registered model description": lambda f: f"registered model '{model_name}' name/description" in f.where,
    }
    missed = [label for label, match in expected.items() if not any(match(f) for f in everything)]
    shown = leaked(everything, access, secret)
    record("secret scan: key planted in S3 objects, MLflow param/tag/artifact, model version tag/description",
           f"all {len(expected)} places found, report masked",
           f"{len(expected) - len(missed)}/{len(expected)} found ({len(everything)} findings)"
           + (f", missed {missed}" if missed else "") + f"; {len(shown)} unmasked", not missed and not shown)
    # Nothing found in places where nothing was planted.
    assert not [f for f in everything if "clean/" in f.where or (f"run {run.info.run_id}" in f.where)]
