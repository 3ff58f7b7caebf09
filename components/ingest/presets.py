"""The built-in input formats: each is a container, a FieldMapping and, where the raw rows need it, a
`prepare` step that reshapes a row before mapping. A source's own `mapping` replaces the preset's
mapping; the container and `prepare` stay (prepare only adds keys, so raw paths keep working).

The fields a preset maps decide which tasks its records feed (see the contract's task list):
dialogue+summary -> summarization, dialogue+topic -> dialogue_topic, review+rating -> review_rating,
sentence+entities -> ner, java+cs -> code_translation.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

from components.common.config import FieldMapping
from components.ingest.mapping import RowError

# Speaker roles seen in chat exports, mapped to the two sides of a support conversation.
ROLES = {"customer": "Customer", "user": "Customer", "client": "Customer", "human": "Customer",
         "agent": "Agent", "assistant": "Agent", "support": "Agent", "bot": "Agent"}


@dataclass(frozen=True)
class Preset:
    container: str  # a bare container, or the internal "conll" / "code_pairs"
    mapping: FieldMapping
    prepare: Callable[[dict], dict] | None = None


def _dialogsum_refs(row: dict) -> dict:
    """DialogSum test has summary1..3 (and topic1..3): all references become `summaries`."""
    if isinstance(row, dict) and "summary1" in row:
        refs = [row[k] for k in ("summary1", "summary2", "summary3") if isinstance(row.get(k), str)]
        row["summaries"] = refs
    return row


_TWEET_TURN = re.compile(r"\s*[^\s:][^:\n]{0,30}:\t")  # "\tCustomer:\t..." starts a turn


def _tweetsumm_lines(row: dict) -> dict:
    """A tweet with line breaks continues on lines without the '\\tSpeaker:\\t' prefix: join them back."""
    text = row.get("dialogue") if isinstance(row, dict) else None
    if isinstance(text, str) and "\n" in text:
        turns: list[str] = []
        for line in text.split("\n"):
            if not line.strip():
                continue
            if turns and not _TWEET_TURN.match(line):
                turns[-1] += " " + line
            else:
                turns.append(line)
        row["dialogue"] = "\n".join(turns)
    return row


def _ibm_turns(row: dict) -> dict:
    """{dialogContent: [{client|client1|agent: handle, message}], agentURL: {url_utterance}} -> turns.

    The speaker is the key that holds the Twitter handle; the closing agent reply that carries the
    document URL is kept outside dialogContent, in agentURL, and is the conversation's last turn."""
    if not isinstance(row, dict):
        return row
    content = row.get("dialogContent")
    if not isinstance(content, list):
        raise RowError("missing field: 'dialogContent' is not a list of messages")
    turns = []
    for i, msg in enumerate(content):
        if not isinstance(msg, dict):
            raise RowError(f"wrong type: dialogContent message {i} is not an object")
        role = next((k for k in msg if k.startswith(("client", "agent"))), None)
        if role is None:
            raise RowError(f"missing field: dialogContent message {i} has no client/agent key")
        turns.append({"role": re.sub(r"\d+$", "", role), "content": msg.get("message"), "id": msg.get("tweet_ID")})
    final = row.get("agentURL")
    if isinstance(final, dict) and isinstance(final.get("url_utterance"), str):
        if final.get("tweet_ID") is None or final.get("tweet_ID") not in [t["id"] for t in turns]:  # ids may be unhashable
            turns.append({"role": "agent", "content": final["url_utterance"], "id": final.get("tweet_ID")})
    row["turns"] = turns
    return row


def _wnut_entities(row: dict) -> dict:
    """tokens/tags of a CoNLL sentence -> sentence text and linearised entities."""
    row["sentence"] = " ".join(row["tokens"])
    row["entities"] = entities(row["tokens"], row["tags"])
    return row


def entities(tokens: list[str], tags: list[str]) -> str:
    """'person: Bob; location: Paris' in sentence order, or 'none'; an I- without its B- starts a span."""
    spans: list[tuple[str, list[str]]] = []
    prev = "O"
    for tok, tag in zip(tokens, tags):
        if tag != "O":
            kind = tag[2:].lower()
            if tag.startswith("I-") and prev != "O" and spans[-1][0] == kind:
                spans[-1][1].append(tok)
            else:
                spans.append((kind, [tok]))
        prev = tag
    return "; ".join(f"{k}: {' '.join(words)}" for k, words in spans) or "none"


PRESETS: dict[str, Preset] = {
    # The project's own chat-log export (pipelines/sample_data.py writes it).
    "chatlog": Preset("jsonl", FieldMapping(
        id="conversation_id|id", messages="messages", speakers=ROLES, fields={"summary": "summary"})),
    "dialogsum": Preset("jsonl", FieldMapping(
        id="fname|id", dialogue="dialogue",
        fields={"summary": "summary|summary1", "summaries": "summaries", "topic": "topic|topic1"},
        optional=["summaries", "topic"]), _dialogsum_refs),
    "samsum": Preset("json", FieldMapping(id="id", dialogue="dialogue", fields={"summary": "summary"})),
    "tweetsumm": Preset("jsonl", FieldMapping(
        id="id", dialogue="dialogue", speakers={"customer": "Customer", "agent": "Agent"}, html=True,
        fields={"summary": "summaries.0", "summaries": "summaries"}), _tweetsumm_lines),
    # Unlabeled support chats: dialogue only, no summary.
    "ibm_customer_care": Preset("json", FieldMapping(
        id="dialogHeader.sessionID", optional=["id"], messages="turns",
        speakers={"client": "Customer", "agent": "Agent"}, html=True), _ibm_turns),
    "yelp": Preset("csv", FieldMapping(id="review_id", fields={"review": "text", "rating": "stars"})),
    "amazon_alexa": Preset("tsv", FieldMapping(fields={"review": "verified_reviews", "rating": "rating"})),
    "wnut17": Preset("conll", FieldMapping(
        fields={"sentence": "sentence", "tokens": "tokens", "tags": "tags", "entities": "entities"}), _wnut_entities),
    "codexglue_java_cs": Preset("code_pairs", FieldMapping(fields={"java": "java", "cs": "cs"})),
}
