"""A shard changed after the shards step wrote it (truncated, or altered to the same size) is refused
before training starts, by HEAD requests against the size and ETag in the manifest, naming the shard."""
from __future__ import annotations

import pyarrow as pa
import pytest

from components.common.storage import join
from components.shards.streams import ShardSink
from components.train.core import check_shards
from components.train.loader import ShardChecksumError


def _shards(store, n: int = 3) -> dict:
    sink = ShardSink(store, join(store.root, "runs", "tamper", "shards"), "train")
    entries = [sink("summarization", k, pa.table({"input_ids": [[1, 2, 3 + k]] * 20, "labels": [[4, 5]] * 20}))
               for k in range(n)]
    return {"splits": {"train": {"shards": entries, "rows": 20 * n}}}


@pytest.mark.parametrize("how", ["truncated", "altered, same size", "deleted"])
def test_a_changed_shard_is_refused_before_training_naming_it(store, record, how):
    manifest = _shards(store)
    check_shards(store, manifest)  # untouched: passes
    victim = manifest["splits"]["train"]["shards"][1]["uri"]
    data = store.get_bytes(victim)
    if how == "truncated":
        store.put_bytes(victim, data[: len(data) // 2])
    elif how == "deleted":
        store.client.delete_object(Bucket=store.cfg.bucket, Key=victim.split("/", 3)[3])
    else:
        middle = len(data) // 2
        store.put_bytes(victim, data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1:])
    with pytest.raises(ShardChecksumError) as e:
        check_shards(store, manifest)
    message = str(e.value)
    record(f"shard {how}", "refused before training, naming it", message.replace(store.root, "<root>")[:70],
           victim in message)
