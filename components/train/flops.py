"""Model FLOPs of a training step, and MFU (model FLOPs utilization) against the device's peak.

MFU counts the useful work only: each example's own tokens, as if it ran alone and unpadded, so
padding and the cross-example attention a packed row computes (and masks away) count for nothing.
That makes padded and packed runs comparable, and is how PaLM and Megatron define it:

- dense layers: 2 FLOPs per weight per token it multiplies. The weights are read off the model's
  linear layers, so any architecture is counted as built (gated FFNs, untied heads, LoRA adapters).
  A T5 encoder weight meets the source tokens; a decoder weight the target tokens, except the
  cross-attention keys and values, which project the encoder's output (source tokens);
- attention scores and the weighted sum: 2 x 2 x q x k x (heads x head dim) per layer, for every
  query/key pair of an example; causal self-attention is counted whole, as PaLM counts it;
- training = 3 x forward (the backward pass costs two forwards); embedding lookups are free.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

# Dense bf16/fp16 tensor-core peaks per GPU, TFLOP/s, from NVIDIA's data sheets (without sparsity).
# Matched against torch.cuda.get_device_name(); the first key found in the name wins, so a longer
# name comes before its prefix ("L40S", "L40", then "L4").
PEAK_TFLOPS = {
    "H200": 989.4, "H100 PCIe": 756.0, "H100 NVL": 835.0, "H100": 989.4, "H800": 989.4,
    "A100": 312.0, "A800": 312.0, "L40S": 362.1, "L40": 181.0, "L4": 121.0, "A10G": 70.0, "A10": 125.0,
}


def peak_tflops(device_name: str) -> float | None:
    """The dense bf16 peak of a GPU named like 'NVIDIA H100 80GB HBM3', or None if unknown."""
    for key, value in PEAK_TFLOPS.items():
        if key in device_name:
            return value
    return None


def device_peak_tflops(device: torch.device, precision: str, configured: float | None) -> float | None:
    """The peak MFU is measured against: the configured one, else a known GPU's bf16 peak. None on CPU
    or in fp32 (no standard peak: fp32 tensor-core rates depend on TF32 settings)."""
    if configured:
        return configured
    if device.type != "cuda" or precision != "bf16":
        return None
    return peak_tflops(torch.cuda.get_device_name(device))


@dataclass(frozen=True)
class FlopModel:
    """Per-token weights and attention widths of one model; forward() prices a batch of examples."""

    source_weights: int  # weights a source (encoder) token meets; 0 for a decoder-only model
    target_weights: int  # weights a target (or decoder-only) token meets
    encoder_attention: int  # sum over encoder layers of heads x head dim
    decoder_attention: int  # the same over decoder (self-attention) layers
    cross_attention: int  # the same over cross-attention layers

    def forward(self, m: "Moments") -> float:
        macs = (self.source_weights * m.src + self.target_weights * m.tgt
                + 2 * self.encoder_attention * m.src_sq + 2 * self.decoder_attention * m.tgt_sq
                + 2 * self.cross_attention * m.src_tgt)
        return 2.0 * macs

    def train(self, m: "Moments") -> float:
        return 3.0 * self.forward(m)


@dataclass
class Moments:
    """Sums over a batch's examples of their source and target lengths, and the products attention needs.
    A decoder-only example has only a target (prompt and answer are one sequence)."""

    src: float = 0.0
    tgt: float = 0.0
    src_sq: float = 0.0
    tgt_sq: float = 0.0
    src_tgt: float = 0.0

    @classmethod
    def of(cls, src: torch.Tensor, tgt: torch.Tensor) -> "Moments":
        src, tgt = src.double(), tgt.double()
        return cls(float(src.sum()), float(tgt.sum()), float((src * src).sum()), float((tgt * tgt).sum()),
                   float((src * tgt).sum()))

    def __add__(self, o: "Moments") -> "Moments":
        return Moments(self.src + o.src, self.tgt + o.tgt, self.src_sq + o.src_sq, self.tgt_sq + o.tgt_sq,
                       self.src_tgt + o.src_tgt)


def _dense_weights(model: torch.nn.Module) -> list[tuple[str, int]]:
    """(module name, weight count) of every matrix multiply: nn.Linear and GPT-2's Conv1D."""
    out = []
    for name, mod in model.named_modules():
        w = getattr(mod, "weight", None)
        if isinstance(mod, torch.nn.Linear) or type(mod).__name__ == "Conv1D":
            if isinstance(w, torch.Tensor):
                out.append((name, w.numel()))  # read before ZeRO-3 partitions the weights
    return out


def flop_model(model: torch.nn.Module) -> FlopModel:
    """Read a Hugging Face T5-style encoder-decoder or decoder-only model (a PEFT wrapper too)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = base.config
    heads = config.num_attention_heads if hasattr(config, "num_attention_heads") else config.num_heads
    head_dim = getattr(config, "d_kv", None) or getattr(config, "head_dim", None) or config.hidden_size // heads
    inner = heads * head_dim
    if config.is_encoder_decoder:
        source = target = 0
        for name, n in _dense_weights(base):
            if name.startswith("encoder.") or ".EncDecAttention.k" in name or ".EncDecAttention.v" in name:
                source += n
            else:  # decoder layers and the LM head
                target += n
        enc_layers, dec_layers = config.num_layers, getattr(config, "num_decoder_layers", None) or config.num_layers
        return FlopModel(source, target, enc_layers * inner, dec_layers * inner, dec_layers * inner)
    layers = config.num_hidden_layers
    return FlopModel(0, sum(n for _, n in _dense_weights(base)), 0, layers * inner, 0)


def batch_moments(inputs, packed: bool, causal: bool) -> Moments:
    """The Moments of a micro-batch as `Batches.next` builds it (padded dict, PackedBatch or
    CausalPackedBatch)."""
    if causal and packed:  # each packed sequence priced as a target of its own length
        width = int(inputs.segments.max()) + 1
        n = _segment_lengths(inputs.segments, width)
        return Moments.of(torch.zeros_like(n), n)
    if causal:  # prompt + answer in one sequence, priced as a target
        n = inputs["attention_mask"].sum(1)
        return Moments.of(torch.zeros_like(n), n)
    if not packed:
        return Moments.of(inputs["attention_mask"].sum(1), (inputs["labels"] != -100).sum(1))
    return Moments.of(*example_lengths(inputs))


def example_lengths(packed) -> tuple[torch.Tensor, torch.Tensor]:
    """(source, target) lengths of every example slot of a seq2seq PackedBatch, aligned; unused slots 0."""
    width = int(max(packed.enc_segments.max(), packed.dec_segments.max())) + 1
    return _segment_lengths(packed.enc_segments, width), _segment_lengths(packed.dec_segments, width)


def _segment_lengths(segments: torch.Tensor, width: int) -> torch.Tensor:
    """Tokens of each example slot of a packed [B, L] segment map (segments 1..k per row, 0 = padding),
    in row order, so the source and target lengths of one example line up; unused slots are 0."""
    flat = (segments + width * torch.arange(segments.shape[0], device=segments.device)[:, None]).flatten()
    counts = torch.bincount(flat, minlength=width * segments.shape[0]).view(segments.shape[0], width)
    return counts[:, 1:].flatten()  # an empty segment slot has length 0 in both maps
