"""hf.local_copy: an S3 prefix is downloaded once, and downloaded again when what is there changes."""
from pathlib import Path

from components.common.hf import local_copy
from components.common.storage import join


def test_a_rewritten_prefix_is_not_served_from_the_old_download(store, tmp_path, monkeypatch):
    monkeypatch.setenv("MIXTUNE_CACHE", str(tmp_path / "cache"))
    prefix = join(store.root, "model")
    store.put_bytes(join(prefix, "config.json"), b'{"dtype": "bfloat16"}')
    first = local_copy(prefix, store)
    assert (Path(first) / "config.json").read_text() == '{"dtype": "bfloat16"}'
    assert local_copy(prefix, store) == first  # unchanged: the same download, no second copy

    store.put_bytes(join(prefix, "config.json"), b'{"dtype": "float32"}')  # e.g. a retried step's export
    second = local_copy(prefix, store)
    assert second != first and (Path(second) / "config.json").read_text() == '{"dtype": "float32"}'
    assert local_copy("google/flan-t5-small", store) == "google/flan-t5-small"  # hub ids pass through
