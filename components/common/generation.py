"""Batched, deterministic generation for a seq2seq or decoder-only model on the evaluation inputs.

Inputs are tokenized once and sorted by length so each batch pads little; outputs are returned in
the original order. An encoder-decoder (T5) takes right-padded inputs and returns only the output;
a decoder-only model continues its prompt, so prompts are left-padded (the next token follows each
prompt's end) and the prompt is cut off its output.

On a GPU the model runs in bf16 (half the memory traffic of fp32, and T5 was trained in bf16, so
its activations stay in range; fp16 overflows in T5's feed-forward layers, so it is never picked
automatically). On CPU it runs in fp32: CPUs without bf16 units run bf16 matmuls slower than fp32.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
PLACEHOLDER = "{dialogue}"  # the one placeholder of a summarization prompt (infer.prompt, the MLflow model's)


def check_prompt(template: str, where: str = "infer.prompt") -> None:
    if PLACEHOLDER not in template:
        raise ValueError(f"{where} has no {PLACEHOLDER} placeholder: {template!r}")


def build_prompt(template: str, dialogue: str) -> str:
    """Plain replacement of the one placeholder: braces in the dialogue stay as they are."""
    return template.replace(PLACEHOLDER, dialogue)


@dataclass(frozen=True)
class GenerationSettings:
    batch_size: int
    num_beams: int
    max_new_tokens: int
    max_source_length: int
    dtype: str | None = None  # a key of DTYPES; None = bf16 on a GPU that supports it, else fp32
    # The loop controls (the config's `generation` section); the defaults are plain greedy/beam search, so
    # a model version saved before they existed generates as it did.
    no_repeat_ngram_size: int = 0
    repetition_penalty: float = 1.0
    length_penalty: float = 1.0
    copy_facts: bool = False  # numbers, ids and names are copied whole from the input (fact_copy.py)

    def __post_init__(self) -> None:
        if self.dtype is not None and self.dtype not in DTYPES:
            raise ValueError(f"dtype {self.dtype!r}: expected one of {sorted(DTYPES)} or None")

    def as_dict(self) -> dict[str, int | float | str]:
        return {
            "batch_size": self.batch_size, "num_beams": self.num_beams,
            "max_new_tokens": self.max_new_tokens, "max_source_length": self.max_source_length,
            "dtype": self.dtype or "auto", "no_repeat_ngram_size": self.no_repeat_ngram_size,
            "repetition_penalty": self.repetition_penalty, "length_penalty": self.length_penalty,
            "copy_facts": self.copy_facts,
        }

    def generate_kwargs(self) -> dict:
        """The search arguments of model.generate; beam-only ones only with beams (else transformers warns)."""
        out: dict = {"num_beams": self.num_beams, "do_sample": False}
        if self.num_beams > 1:
            out |= {"early_stopping": True, "length_penalty": self.length_penalty}
        if self.no_repeat_ngram_size:
            out["no_repeat_ngram_size"] = self.no_repeat_ngram_size
        if self.repetition_penalty != 1.0:
            out["repetition_penalty"] = self.repetition_penalty
        return out


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def generation_dtype(device: torch.device, override: str | None = None) -> torch.dtype:
    """The dtype the model generates in: the override if given, else bf16 on a bf16-capable GPU, else fp32."""
    if override is not None:
        return DTYPES[override]
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def length_sorted_batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches, longest first so a memory problem shows up on batch one."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def generate(model, tokenizer, texts: list[str], settings: GenerationSettings, desc: str = "generate",
             progress: bool = True) -> list[str]:
    """Greedy (num_beams=1) or beam-search outputs for texts, in the order of texts, with the loop controls.

    The model is moved to the device and cast to the generation dtype in place: callers load a model
    for evaluation and free it afterwards, so a copy would only double the memory needed.
    progress=False for a server, which generates many small batches.
    """
    device = pick_device()
    model.to(device, dtype=generation_dtype(device, settings.dtype)).eval()
    causal = not model.config.is_encoder_decoder
    if causal:
        tokenizer.padding_side = "left"
        if tokenizer.pad_token_id is None:  # many decoder tokenizers have none; padded positions are masked
            tokenizer.pad_token = tokenizer.eos_token
    encoded = tokenizer(texts, truncation=True, max_length=settings.max_source_length)["input_ids"]
    outputs: list[str] = [""] * len(texts)
    batches = length_sorted_batches([len(ids) for ids in encoded], settings.batch_size)
    with torch.inference_mode():
        for idx in tqdm(batches, desc=desc, unit="batch", mininterval=5.0, disable=not progress):
            batch = tokenizer.pad({"input_ids": [encoded[i] for i in idx]}, padding=True, return_tensors="pt")
            extra = {}
            if settings.copy_facts:
                from transformers import LogitsProcessorList

                from .fact_copy import FactCopyProcessor  # relative: this module also ships as mixtune_pyfunc

                extra["logits_processor"] = LogitsProcessorList([FactCopyProcessor(
                    tokenizer, [encoded[i] for i in idx], settings.num_beams,
                    batch["input_ids"].shape[1] if causal else 0)])
            generated = model.generate(
                input_ids=batch["input_ids"].to(device),
                attention_mask=batch["attention_mask"].to(device),
                max_new_tokens=settings.max_new_tokens,
                pad_token_id=tokenizer.pad_token_id,
                **settings.generate_kwargs(), **extra,
            )
            if causal:
                generated = generated[:, batch["input_ids"].shape[1]:]
            for i, text in zip(idx, tokenizer.batch_decode(generated, skip_special_tokens=True)):
                outputs[i] = text.strip()
    return outputs
