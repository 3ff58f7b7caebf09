"""The tokenizer used by shards, training and evaluation alike.

A named tokenizer or the base model's is loaded as is. For the offline `tiny` base, a T5-style
Unigram tokenizer (<pad>=0, </s>=1, <unk>=2, </s> appended) is trained on the training text, which
arrives as an iterator (of strings or of batches of strings), so it is never all in memory at once.
"""
from __future__ import annotations

from collections.abc import Iterable

from components.common.config import MixtuneConfig

SPECIALS = ["<pad>", "</s>", "<unk>"]


def train_unigram(texts: Iterable[str] | Iterable[list[str]], vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    # Single digits: order numbers and amounts become copyable with a small vocabulary.
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Metaspace(), pre_tokenizers.Digits(individual_digits=True)]
    )
    tok.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=SPECIALS, unk_token="<unk>")
    tok.train_from_iterator(texts, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)]
    )
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")


def build_tokenizer(cfg: MixtuneConfig, train_texts: Iterable[str] | Iterable[list[str]]):
    from transformers import AutoTokenizer

    if cfg.model.tokenizer:
        return AutoTokenizer.from_pretrained(cfg.model.tokenizer)
    if cfg.model.base == "tiny":
        return train_unigram(train_texts, cfg.model.tiny.vocab_size)
    return AutoTokenizer.from_pretrained(cfg.model.base)
