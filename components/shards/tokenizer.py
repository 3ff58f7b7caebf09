"""The tokenizer used by shards, training and evaluation alike.

A named tokenizer or the base model's is loaded as is. For the offline `tiny` base, a T5-style
Unigram tokenizer (<pad>=0, </s>=1, <unk>=2, </s> appended) is trained on the training text with
SentencePiece, T5's own trainer. The trainer in `tokenizers` is not deterministic (ties break in
Rust hash order, scores drift in the last digits), so the same data and seed gave different
vocabularies and different models; SentencePiece gives the same vocabulary on every run.
The pieces and scores are then loaded into a fast `tokenizers` Unigram with the same normalizer.
"""
from __future__ import annotations

import io
import string
from collections.abc import Iterable, Iterator

from components.common.config import MixtuneConfig

SPECIALS = ["<pad>", "</s>", "<unk>"]
MAX_LINE_BYTES = 1 << 16  # SentencePiece skips longer sentences; lines of chats are far shorter
# Every printable ASCII character is a piece, seen in the first round's text or not: a model trained on
# chats without a "q", "$" or "/" could otherwise never read or write one in a later round's logs, which
# keep the champion's tokenizer (they came out as <unk>: "reuiring", an amount without its "$").
REQUIRED_CHARS = string.ascii_letters + string.digits + string.punctuation


def _lines(texts: Iterable[str] | Iterable[list[str]]) -> Iterator[str]:
    """One sentence per non-empty line: dialogues are 'Speaker: text' lines."""
    for item in texts:
        for text in [item] if isinstance(item, str) else item:
            for line in text.split("\n"):
                if line.strip():
                    yield line


def train_unigram(texts: Iterable[str] | Iterable[list[str]], vocab_size: int):
    import sentencepiece as spm
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    proto = io.BytesIO()
    spm.set_random_generator_seed(0)  # only used if the input is sampled; fixed all the same
    spm.SentencePieceTrainer.train(
        sentence_iterator=_lines(texts), model_writer=proto, model_type="unigram", vocab_size=vocab_size,
        hard_vocab_limit=False,  # a small corpus gets a smaller vocabulary, as with the HF trainer
        pad_id=0, eos_id=1, unk_id=2, bos_id=-1, split_digits=True, normalization_rule_name="identity",
        max_sentence_length=MAX_LINE_BYTES, num_threads=2, minloglevel=2, required_chars=REQUIRED_CHARS)
    sp = spm.SentencePieceProcessor(model_proto=proto.getvalue())
    vocab = [(sp.id_to_piece(i), sp.get_score(i)) for i in range(sp.get_piece_size())]
    vocab[:3] = [(tok, 0.0) for tok in SPECIALS]

    tok = Tokenizer(models.Unigram(vocab, unk_id=2))
    tok.normalizer = normalizers.NFKC()
    # Single digits: order numbers and amounts become copyable with a small vocabulary.
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Metaspace(), pre_tokenizers.Digits(individual_digits=True)]
    )
    tok.decoder = decoders.Metaspace()
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)]
    )
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")


def build_tokenizer(cfg: MixtuneConfig, train_texts: Iterable[str] | Iterable[list[str]], base_uri: str | None = None):
    """The named tokenizer, else the base model's, else for `tiny` one trained on the text.

    base_uri: where the base model is (models:/ already pinned by the caller); defaults to model.base.
    An s3:// prefix (an earlier run's model) is copied down first; a models:/ tokenizer is resolved."""
    from transformers import AutoTokenizer

    from components.common.hf import local_copy
    from components.common.storage import Store

    ref = cfg.model.tokenizer or (None if cfg.model.base == "tiny" else (base_uri or cfg.model.base))
    if ref is None:
        return train_unigram(train_texts, cfg.model.tiny.vocab_size)
    return AutoTokenizer.from_pretrained(local_copy(ref, Store(cfg.storage)))  # s3:// and models:/ fetched
