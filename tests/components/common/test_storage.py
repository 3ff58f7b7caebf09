import pytest

from components.common.storage import S3Uri, join


def test_join_and_parse():
    assert join("s3://b/root", "runs", "r1/ingest") == "s3://b/root/runs/r1/ingest"
    assert join("s3://b", "", "x") == "s3://b/x"
    u = S3Uri.parse("s3://bucket/a/b.parquet")
    assert (u.bucket, u.key) == ("bucket", "a/b.parquet") and str(u) == "s3://bucket/a/b.parquet"


@pytest.mark.parametrize("part", ["..", "a/../../b", "a\\b"])
def test_join_refuses_escape(part):
    with pytest.raises(ValueError, match="unsafe"):
        join("s3://b/root", part)


def test_parse_rejects_non_s3():
    with pytest.raises(ValueError):
        S3Uri.parse("/tmp/x")


def test_round_trip_on_real_s3(store, tmp_path):
    root = store.root
    store.put_json(join(root, "a", "m.json"), {"x": 1})
    assert store.get_json(join(root, "a", "m.json")) == {"x": 1}
    src = tmp_path / "dir"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "f.bin").write_bytes(b"\x00\x01" * 1000)
    (src / "g.txt").write_text("hello")
    written = store.upload_dir(src, join(root, "d"))
    assert len(written) == 2
    out = store.download_dir(join(root, "d"), tmp_path / "back")
    assert (out / "sub" / "f.bin").read_bytes() == b"\x00\x01" * 1000
    assert (out / "g.txt").read_text() == "hello"
    assert store.exists(join(root, "d", "g.txt")) and not store.exists(join(root, "d", "nope"))
    with pytest.raises(FileNotFoundError):
        store.get_bytes(join(root, "missing"))
    with pytest.raises(FileNotFoundError):
        store.download_dir(join(root, "empty"), tmp_path / "e")


def test_run_root_defaults_under_runs_and_refuses_names_that_escape():
    from components.common.config import StorageConfig
    from components.common.storage import run_root

    cfg = StorageConfig(bucket="b", prefix="team")
    assert run_root(cfg, "r1") == "s3://b/team/runs/r1"
    assert run_root(cfg, "r1", "s3://other/x") == "s3://other/x"
    for bad in ("", "..", "a/b"):
        with pytest.raises(ValueError):
            run_root(cfg, bad)


def test_put_if_absent_lets_exactly_one_writer_create_a_key(store):
    uri = f"{store.root}/claims/one.json"
    assert store.put_if_absent(uri, b"first")
    assert not store.put_if_absent(uri, b"second")
    assert store.get_bytes(uri) == b"first"
    store.delete(uri)
    assert store.put_if_absent(uri, b"third")
