"""Fact-copying decoding (`generation.copy_facts`): a number, id or name the model writes must be copied
whole from its input.

A transformers LogitsProcessor, applied at every generation step. Tokens are of three kinds:
- a fact start: a word-initial piece that begins with a digit, or with a capital letter when the same
  word in lower case is not in the vocabulary ("Quentin", "Family"; not "The", "Order"); a bare digit; a
  glued piece that begins with a capital, when it follows no fact ("▁", "Z", "o", ...: a rare name spelled
  from small pieces; "D", "M" of "DM" when the vocabulary has no "▁D");
- a continuation: a piece glued to the one before (no word boundary), like the digits after "7" in
  "703458", the "." in "58.95", or "uentin" after "Q";
- anything else (a new word, punctuation after a space, the end of the text).
Outside a fact, a fact start is allowed only if the input has it. Inside one (a fact start and the
continuations after it), the next continuation must extend it to a token span the input has, and the
fact may end only where one of the input's occurrences ends: "order 703" cannot stop short of 703458.

This guarantees that stated numbers and names occur in the dialogue; it cannot tell whether they are in
the right place (the customer's name where the agent's belongs): ROUGE and name coverage still measure
that. Shipped with each MLflow model (code/mixtune_pyfunc/), so serving decodes the same way.
"""
from __future__ import annotations

from functools import lru_cache

import torch


@lru_cache(maxsize=8)
def _kinds(tokenizer) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(fact-start, continuation, glued punctuation) masks over the vocabulary, once per tokenizer."""
    vocab = tokenizer.get_vocab()
    size = max(len(tokenizer), max(vocab.values()) + 1)
    starts, conts, punct = (torch.zeros(size, dtype=torch.bool) for _ in range(3))
    special = set(tokenizer.all_special_ids)
    lower_words = {p[1:] for p in vocab if p.startswith("▁") and p[1:2].islower()}
    for piece, i in vocab.items():
        if i in special or not piece:
            continue
        word_start = piece.startswith("▁") or piece.startswith("Ġ")
        text = piece[1:] if word_start else piece
        if not text:
            continue
        if text[0].isdigit():
            starts[i] = True  # a digit always starts or continues a number
            conts[i] = not word_start
        elif word_start:
            starts[i] = text[0].isupper() and text.lower() not in lower_words
        else:
            conts[i] = text[0].isalnum() or text[0] in ".,:/-"
            punct[i] = text[0] in ".,:/-"  # "58.95" continues with it; "order 703458." ends with it
            # A rare name has no word piece: "▁", "Z", "o", ... Its glued capital starts it, as a digit does.
            starts[i] = text[0].isupper()
    return starts, conts, punct


class FactCopyProcessor:
    """One per generate call. sources: the input token ids of each batch row (padding removed); rows of
    the scores are beams, num_beams per source; prompt_length: tokens of each row that are the prompt
    (a decoder-only model's input_ids carry it), 0 for an encoder-decoder."""

    def __init__(self, tokenizer, sources: list[list[int]], num_beams: int, prompt_length: int = 0):
        self.starts, self.conts, self.punct = _kinds(tokenizer)
        self.special = set(tokenizer.all_special_ids)
        self.sources = sources
        # Where facts start in each input ("703458" starts at its 7, not at its 4), and which tokens do.
        self.fact_starts = [set(self._starts(src)) for src in sources]
        self.present = [torch.zeros(len(self.starts), dtype=torch.bool) for _ in sources]
        for mask, src, where in zip(self.present, sources, self.fact_starts):
            mask[torch.tensor([src[p] for p in where if src[p] < len(mask)], dtype=torch.long)] = True
        self.num_beams, self.prompt_length = num_beams, prompt_length

    def _ends(self, src: list[int], q: int) -> bool:
        """Does the fact before q end there: at the end, before a new word, or before punctuation that is
        not inside it ("Taylor." ends; "58.95" does not end at "58")."""
        if q >= len(src) or not self._is_cont(src[q]):
            return True
        return bool(self.punct[src[q]]) and (q + 1 >= len(src) or not self._is_cont(src[q + 1]))

    def _in_fact(self, seq: list[int]) -> list[bool]:
        """Per token: is it part of a fact? A fact start after no fact begins one; a glued piece continues
        the fact before it. So a digit or capital glued to a plain word starts a fact ("rein" + "111",
        "▁" + "Z"), and the digits after "7" in "703458" continue one."""
        flags: list[bool] = []
        for t in seq:
            flags.append((bool(flags) and flags[-1] and self._is_cont(t)) or self._is_start(t))
        return flags

    def _starts(self, seq: list[int], flags: list[bool] | None = None) -> list[int]:
        """Where facts begin in seq: in a fact, and not a glued continuation of the fact before."""
        flags = self._in_fact(seq) if flags is None else flags
        return [k for k, f in enumerate(flags) if f and not (k > 0 and flags[k - 1] and self._is_cont(seq[k]))]

    def _span(self, generated: list[int]) -> list[int]:
        """The fact being written: from its start to the last token, or [] when the last token is in none."""
        flags = self._in_fact(generated)
        if not flags or not flags[-1]:
            return []
        return generated[self._starts(generated, flags)[-1]:]

    def _is_start(self, t: int) -> bool:
        return t < len(self.starts) and bool(self.starts[t])

    def _is_cont(self, t: int) -> bool:
        return t < len(self.conts) and bool(self.conts[t])

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        vocab = scores.shape[-1]
        device = scores.device
        starts, conts, punct = (m[:vocab].to(device) for m in (self.starts, self.conts, self.punct))
        for row in range(scores.shape[0]):
            src = self.sources[row // self.num_beams]
            absent = starts & ~self.present[row // self.num_beams][:vocab].to(device)
            generated = input_ids[row, self.prompt_length:].tolist()
            span = self._span(generated)
            n = len(span)
            starts_here = self.fact_starts[row // self.num_beams]
            occurrences = [p for p in starts_here if src[p:p + n] == span] if n else []
            if not n:  # not inside a fact: a new one must start as one of the input's
                scores[row, absent] = -float("inf")
                if not any(t not in self.special for t in generated):  # nothing to glue a piece to yet
                    scores[row, conts] = -float("inf")  # ("enia Ito" for "Xenia Ito")
                continue
            if not occurrences:  # a fact ended by glued punctuation ("703458."): nothing may be glued on
                scores[row, absent | (conts & ~punct)] = -float("inf")
                continue
            following = [src[p + n] if p + n < len(src) else None for p in occurrences]
            extend = torch.zeros(vocab, dtype=torch.bool, device=scores.device)
            for t in following:
                if t is not None and t < vocab and self._is_cont(t):
                    extend[t] = True
            may_end = any(self._ends(src, p + n) for p in occurrences)
            if may_end:  # a new fact must be in the input; a glued piece must extend this one, or end it
                blocked = (conts & ~extend & ~punct) | (absent & ~conts)
            else:
                blocked = ~extend  # the fact is not finished: only its continuations
            scores[row, blocked] = -float("inf")
        return scores
