"""LoRA on the tiny random T5: what trains, what stays frozen, and that the merged export is the same model."""
from __future__ import annotations

import copy

import pytest
import torch

from components.common.config import LoraConfig, TinyModelConfig
from components.train import lora as lora_lib
from components.train.model import build_tiny

# peft asks transformers a deprecated question on every wrap; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")

VOCAB = 600
TINY = TinyModelConfig(d_model=64, d_ff=128, d_kv=16, num_heads=4, num_layers=1, num_decoder_layers=1,
                       vocab_size=VOCAB)


def base_model(seed: int = 5):
    return build_tiny(TINY, VOCAB, pad_id=0, eos_id=1, seed=seed)


def fixed_batch() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    input_ids = torch.randint(3, VOCAB, (4, 16), generator=g)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 12:] = 0  # some padding, as real batches have
    return {"input_ids": input_ids, "attention_mask": attention_mask,
            "labels": torch.randint(3, VOCAB, (4, 8), generator=g)}


def train_steps(model, batch, steps: int = 8, lr: float = 1e-2) -> list[float]:
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    losses = []
    for _ in range(steps):
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    model.eval()
    return losses


def logits(model, batch) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(**batch).logits


@pytest.fixture(scope="module")
def trained_once():
    """A peft model after a few steps (adapters no longer zero), with its batch."""
    torch.manual_seed(0)
    model = lora_lib.apply_lora(base_model(), LoraConfig(enabled=True, r=8, alpha=16, target_modules=["q", "v", "wi"]))
    batch = fixed_batch()
    train_steps(model, batch)
    return model, batch


@pytest.fixture
def trained(trained_once):
    """A private copy: merging rewrites the model in place."""
    model, batch = trained_once
    return copy.deepcopy(model), batch


def test_only_adapter_params_train():
    base = base_model()
    base_total = sum(p.numel() for p in base.parameters())
    model = lora_lib.apply_lora(base, LoraConfig(enabled=True, r=4, alpha=8, target_modules=["q", "v"]))
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    # q and v in the encoder self-attention, decoder self-attention and cross-attention: 6 projections
    assert len(trainable) == 6 * 2
    summary = lora_lib.trainable_summary(model)
    adapters = 6 * 2 * 4 * TINY.d_model  # each of A (r x d) and B (d x r); q, v are d x d here
    assert summary["trainable"] == adapters
    assert summary["total"] == base_total + adapters
    assert summary["fraction"] == pytest.approx(adapters / (base_total + adapters))
    assert 0 < summary["fraction"] < 0.1


def test_training_lowers_loss_changes_adapters_only():
    torch.manual_seed(0)
    base = base_model()
    before = {k: v.clone() for k, v in base.state_dict().items()}
    model = lora_lib.apply_lora(base, LoraConfig(enabled=True, r=8, alpha=16, target_modules=["q", "v", "wi"]))
    lora_b_before = {k: v.clone() for k, v in model.state_dict().items() if ".lora_B." in k}
    assert all(torch.count_nonzero(v) == 0 for v in lora_b_before.values())  # peft starts B at zero

    losses = train_steps(model, fixed_batch())
    assert losses[-1] < losses[0] - 0.3, losses

    after = model.get_base_model().state_dict()
    for key, value in before.items():
        wrapped = key if key in after else key.replace(".weight", ".base_layer.weight")
        assert torch.equal(after[wrapped], value), f"base weight {key} changed"
    lora_b_after = model.state_dict()
    assert all(torch.count_nonzero(lora_b_after[k]) > 0 for k in lora_b_before), "an adapter did not train"


def test_merged_export_equals_peft_model_and_round_trips(trained, tmp_path):
    from transformers import AutoModelForSeq2SeqLM

    model, batch = trained
    expected = logits(model, batch)

    # The non-mutating path (the one that works under ZeRO-3), saved like the worker saves a model.
    state = lora_lib.merged_state_dict(model)
    assert not any("lora" in k or "base_layer" in k for k in state)
    tied = {"encoder.embed_tokens.weight", "decoder.embed_tokens.weight", "lm_head.weight"}
    assert "shared.weight" in state and not tied & set(state)  # tied weights once, as save_pretrained keeps them
    # save_pretrained drops tied duplicates from the dict it is given: hand it a copy.
    model.get_base_model().save_pretrained(tmp_path / "from_state", state_dict=dict(state))
    reloaded = AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "from_state")
    torch.testing.assert_close(logits(reloaded, batch), expected, atol=1e-5, rtol=0)
    assert not (tmp_path / "from_state" / "adapter_config.json").exists()

    merged = lora_lib.merged_for_export(model)
    assert not lora_lib.is_peft(merged) and type(merged).__name__ == "T5ForConditionalGeneration"
    assert not any("lora" in name for name, _ in merged.named_parameters())
    torch.testing.assert_close(logits(merged, batch), expected, atol=1e-5, rtol=0)

    merged.save_pretrained(tmp_path / "merged")
    assert (tmp_path / "merged" / "model.safetensors").exists()
    reloaded = AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "merged")
    torch.testing.assert_close(logits(reloaded, batch), expected, atol=1e-5, rtol=0)
    for key, value in reloaded.state_dict().items():
        torch.testing.assert_close(value, state["shared.weight" if key in tied else key], atol=1e-6, rtol=0)


def test_adapter_alone_round_trips(trained, tmp_path):
    from peft import PeftModel

    model, batch = trained
    expected = logits(model, batch)
    state = lora_lib.adapter_state(model)
    assert state and all(".lora_A." in k or ".lora_B." in k for k in state)

    for out, kwargs in ((tmp_path / "own", {}), (tmp_path / "given", {"state_dict": state})):
        lora_lib.save_adapter(model, out, **kwargs)
        assert (out / "adapter_config.json").exists()
        # The adapter file is small: the base weights are not in it.
        assert (out / "adapter_model.safetensors").stat().st_size < 0.2 * sum(
            p.numel() * 4 for p in model.get_base_model().parameters())
        loaded = PeftModel.from_pretrained(base_model(), out)  # same seed: the same base
        torch.testing.assert_close(logits(loaded, batch), expected, atol=1e-5, rtol=0)


def test_encoder_outputs_path_works_through_peft(trained):
    """packing.packed_forward runs the encoder alone and passes encoder_outputs: peft must forward it."""
    model, batch = trained
    with torch.no_grad():
        hidden = model.get_encoder()(input_ids=batch["input_ids"],
                                     attention_mask=batch["attention_mask"]).last_hidden_state
        split = model(encoder_outputs=(hidden,), attention_mask=batch["attention_mask"],
                      labels=batch["labels"]).logits
    torch.testing.assert_close(split, logits(model, batch), atol=1e-5, rtol=0)


@pytest.mark.parametrize("targets, missing", [(["q_proj", "v_proj"], "q_proj"), (["q", "vv"], "vv")])
def test_unknown_target_modules_are_a_clear_error(targets, missing):
    with pytest.raises(ValueError) as err:
        lora_lib.apply_lora(base_model(), LoraConfig(enabled=True, target_modules=targets))
    message = str(err.value)
    assert missing in message and "train.lora.target_modules" in message
    for existing in ("'q'", "'k'", "'v'", "'o'", "'wi'", "'wo'"):
        assert existing in message


def test_suffixes_list_t5_projections():
    assert {"q", "k", "v", "o", "wi", "wo", "lm_head"} <= set(lora_lib.adaptable_suffixes(base_model()))
