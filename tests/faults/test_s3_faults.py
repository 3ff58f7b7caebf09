"""S3 faults between a step and the server: 5xx, slow responses, dropped connections, a server restart
in the middle of a step. Steps retry with backoff (botocore standard mode) and finish; nothing is lost."""
from __future__ import annotations

import threading
import time

import pytest
from botocore.exceptions import ClientError

from components.common.config import SourceConfig
from components.common.storage import Store, join
from components.ingest.core import run_ingest
from pipelines.embedded import LocalS3
from tests.faults.proxy import FaultProxy


def test_5xx_responses_are_retried(proxied_store, proxy, record):
    uri = join(proxied_store.root, "faults", "a.json")
    proxy.inject("5xx", 3)
    proxied_store.put_json(uri, {"x": 1})
    ok = proxied_store.get_json(uri) == {"x": 1} and proxy.seen["5xx"] == 3
    record("S3 503 SlowDown x3", "retried, object written once", f"{proxy.seen['5xx']} x 503, then read back", ok)


def test_slow_responses_are_waited_for(proxied_store, proxy, record):
    uri = join(proxied_store.root, "faults", "slow.json")
    proxied_store.put_json(uri, {"slow": True})
    proxy.inject("slow", 1, delay=3.0)
    started = time.monotonic()
    value = proxied_store.get_json(uri)
    took = time.monotonic() - started
    record("S3 response delayed 3 s", "waited, same bytes", f"read after {took:.1f} s", value == {"slow": True}
           and took >= 3.0)


def test_dropped_connections_are_retried(proxied_store, proxy, record):
    uri = join(proxied_store.root, "faults", "drop.json")
    proxy.inject("drop", 2)
    proxied_store.put_json(uri, {"drop": 2})
    ok = proxied_store.get_json(uri) == {"drop": 2} and proxy.seen["drop"] == 2
    record("S3 connection dropped x2", "retried", f"{proxy.seen['drop']} drops, then written", ok)


def test_a_lasting_outage_ends_in_a_clear_error(proxied_store, proxy, record):
    uri = join(proxied_store.root, "faults", "never.json")
    store = Store(proxied_store.cfg.model_copy(update={"max_attempts": 4}))  # keep the test short
    proxy.inject("5xx", 50)
    with pytest.raises(ClientError) as e:
        store.put_json(uri, {})
    message = str(e.value)
    record("S3 503 on every attempt", "error naming the code, after retries",
           f"{proxy.seen['5xx']} attempts: {message[:60]}", "SlowDown" in message and proxy.seen["5xx"] >= 4)


def _chats(n: int) -> bytes:
    import json
    return "".join(json.dumps({"conversation_id": f"c{i}", "summary": f"Parcel {i} is late.", "messages": [
        {"role": "user", "content": f"my parcel {i} has not arrived"},
        {"role": "assistant", "content": f"I am sorry, I will check parcel {i}."}]}) + "\n" for i in range(n)).encode()


def test_ingest_survives_a_server_restart_mid_step(tmp_path, tiny_config, record, monkeypatch, s3_server):
    """The step runs against its own server through the proxy; the server is stopped and started
    again (same data, new ports) while the step is reading and writing."""
    server = LocalS3(tmp_path / "s3")
    # The session server's keys: MLflow's S3 client in this process caches the first keys it saw.
    server.access_key, server.secret_key = s3_server.access_key, s3_server.secret_key
    server.start()
    try:
        server.create_bucket("faults")
        for key, value in server.env().items():
            monkeypatch.setenv(key, value)
        with FaultProxy(server.port) as proxy:
            storage = tiny_config.storage.model_copy(update={"bucket": "faults", "prefix": "restart",
                                                              "endpoint_url": proxy.endpoint})
            store = Store(storage)
            for k in range(12):  # many objects: the step is still at work when the server goes away
                store.put_bytes(join(store.root, "incoming", f"part-{k:02d}.jsonl"), _chats(40))
            cfg = tiny_config.model_copy(update={"storage": storage, "data": tiny_config.data.model_copy(
                update={"sources": [SourceConfig(path=join(store.root, "incoming") + "/", name="team")]})})
            outcome = {}

            def step():
                try:
                    outcome["result"] = run_ingest(cfg, join(store.root, "runs", "r1"), "restart-run")
                except Exception as e:  # reported in the table
                    outcome["error"] = e

            worker = threading.Thread(target=step)
            forwarded_before = proxy.seen["forwarded"]
            worker.start()
            while proxy.seen["forwarded"] < forwarded_before + 5 and worker.is_alive():
                time.sleep(0.01)
            proxy.down = True
            outage = time.monotonic()
            server.stop()
            server.start()  # same folder: same data, same keys, new ports
            proxy.upstream_port = server.port
            proxy.down = False
            outage = time.monotonic() - outage
            worker.join(timeout=240)
            refused = proxy.seen["down"]
        result = outcome.get("result")
        counts = result.counts if result else {}
        ok = (result is not None and refused > 0 and counts["rows_read"] == 12 * 40
              and counts["rows_read"] == counts["rows_kept"] + counts["rows_quarantined"] + counts["rows_duplicate"])
        record("S3 server restarted mid-ingest", "step finishes, every row counted",
               f"{outage:.0f} s down, {refused} requests refused; "
               f"{counts.get('rows_read', outcome.get('error'))} rows read", ok)
    finally:
        server.stop()
