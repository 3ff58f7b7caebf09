"""The MFU benchmark runs end to end on CPU (tiny shape), and its figures hang together."""
import importlib.util
import json
import math
import random
from pathlib import Path

import pytest

PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "train_mfu.py"
spec = importlib.util.spec_from_file_location("train_mfu_benchmark", PATH)
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


@pytest.fixture
def tokens(tmp_path):
    rng = random.Random(0)  # lengths spread like chats and summaries, so padding wastes something
    examples = [([rng.randrange(3, 32000) for _ in range(rng.randint(20, 400))] + [1],
                 [rng.randrange(3, 32000) for _ in range(rng.randint(5, 60))] + [1]) for _ in range(120)]
    path = tmp_path / "tokens.npz"
    bench.save_tokens(path, examples)
    return path, examples


def test_token_file_round_trips(tokens):
    path, examples = tokens
    assert bench.load_tokens(path) == examples


def test_packed_and_padded_on_cpu_with_a_given_peak(tokens, tmp_path, capsys):
    path, _ = tokens
    out = tmp_path / "result.json"
    bench.main(["--tokens", str(path), "--shape", "tiny", "--examples", "120", "--batch", "6", "--steps", "3",
                "--warmup", "1", "--peak-tflops", "0.5", "--out", str(out)])
    r = json.loads(out.read_text())
    assert r["precision"] == "fp32" and r["device"].startswith("cpu") and r["peak_tflops"] == 0.5
    padded, packed = r["modes"]["padded"], r["modes"]["packed"]
    assert packed["real_share"] > padded["real_share"]  # packing wastes fewer positions
    for m in (padded, packed):
        assert m["tokens_per_second"] > 0 and math.isfinite(m["last_loss"])
        assert m["mfu"] == pytest.approx(m["model_tflops"] / 0.5)
        assert m["computed_tflops"] > m["model_tflops"]  # padding and cross-example attention are computed too
    assert r["packed_over_padded"] == pytest.approx(packed["tokens_per_second"] / padded["tokens_per_second"])
    printed = capsys.readouterr().out
    assert "| packed |" in printed and "command: python benchmarks/train_mfu.py --tokens" in printed


def test_no_peak_on_cpu_means_no_mfu(tokens, tmp_path):
    path, _ = tokens
    out = tmp_path / "result.json"
    bench.main(["--tokens", str(path), "--shape", "tiny", "--examples", "60", "--batch", "4", "--steps", "1",
                "--warmup", "0", "--precision", "bf16", "--out", str(out)])
    r = json.loads(out.read_text())
    assert r["precision"] == "bf16" and r["peak_tflops"] is None
    assert all(m["mfu"] is None for m in r["modes"].values())


@pytest.mark.parametrize("shape,params", [("flan-t5-small", 76_961_152), ("flan-t5-base", 247_577_856)])
def test_shapes_have_the_published_checkpoints_parameter_counts(shape, params):
    import torch

    model = bench.build_model(shape, torch.float32, torch.device("cpu"), "sdpa")
    assert sum(p.numel() for p in model.parameters()) == params  # untied head included


def test_imports_only_what_a_bare_gpu_box_has():
    """The device image has torch, transformers and numpy, not pydantic, boto3 or mlflow."""
    import subprocess
    import sys

    code = ("import sys; sys.path.insert(0, 'benchmarks'); import train_mfu; "
            "print(sorted({'pydantic', 'boto3', 'mlflow', 'deepspeed', 'kfp'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], cwd=PATH.parents[1], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_computed_attention_is_each_example_tile_with_per_segment_attention():
    """Dense masks compute a packed row's attention whole; per-segment attention only each example's tile
    (its lengths rounded up to segment_attention.TILE), and the dense layers see every position either way."""
    from types import SimpleNamespace

    ex = lambda s, t: SimpleNamespace(input_ids=[5] * s, labels=[6] * t)  # noqa: E731
    batch = bench.pack_examples([[ex(40, 10), ex(20, 5)], [ex(100, 33)]], 0, 0)
    src_len, tgt_len = batch.input_ids.shape[1], batch.labels.shape[1]
    dense = bench.computed_moments(batch, True, "dense")
    tiles = bench.computed_moments(batch, True, "segments")
    assert (dense.src, dense.tgt) == (tiles.src, tiles.tgt) == (2 * src_len, 2 * tgt_len)
    assert dense.src_sq == 2 * src_len ** 2
    rounded_src = [min(64, src_len), min(32, src_len), min(128, src_len)]
    rounded_tgt = [min(32, tgt_len), min(32, tgt_len), min(64, tgt_len)]
    assert tiles.src_sq == sum(n * n for n in rounded_src)
    assert tiles.tgt_sq == sum(n * n for n in rounded_tgt)
    assert tiles.src_tgt == sum(s * t for s, t in zip(rounded_src, rounded_tgt))
    assert tiles.src_sq < dense.src_sq
