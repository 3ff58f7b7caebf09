"""The padded seq2seq loss the train step uses: the model's own loss, but taken in fp32 under bf16."""
import copy

import pytest
import torch

from components.common.config import TinyModelConfig
from components.train.batches import collate, seq2seq_loss
from components.train.model import build_tiny

PAD, EOS, VOCAB = 0, 1, 97


@pytest.fixture(scope="module")
def model():
    tiny = TinyModelConfig(d_model=32, d_ff=64, d_kv=8, num_heads=4, num_layers=2, num_decoder_layers=2)
    return build_tiny(tiny, VOCAB, PAD, EOS, seed=1).eval()


def _batch():
    return collate([([5, 6, 7, 8, EOS], [9, 10, EOS]), ([11, EOS], [12, 13, 14, 15, EOS])], PAD)  # padded, -100s


def test_equals_the_models_own_loss_in_fp32(model):
    batch = _batch()
    assert seq2seq_loss(model, model, batch).item() == pytest.approx(model(**batch).loss.item(), abs=1e-6)


def test_bf16_model_gets_an_fp32_loss_closer_to_the_fp32_one(model):
    batch = _batch()
    reference = model(**batch).loss.item()
    bf16 = copy.deepcopy(model).to(torch.bfloat16)
    own, ours = bf16(**batch).loss, seq2seq_loss(bf16, bf16, batch)
    assert own.dtype == torch.bfloat16 and ours.dtype == torch.float32
    assert abs(ours.item() - reference) <= abs(own.item() - reference)
