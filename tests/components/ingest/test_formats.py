"""Containers and FieldMapping features on small inputs built in the test (no third-party data)."""
import io
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from components.common.config import DataConfig, FieldMapping, SourceConfig
from components.ingest.formats import parse_file
from components.ingest.mapping import Mapper, RowError, compile_path, get_path, html_to_text
from components.ingest.presets import PRESETS, entities

LIMITS = DataConfig()


def parse(fmt, name, data, mapping=None, files=None, limits=LIMITS, **spec):
    src = SourceConfig(path=name, format=fmt, mapping=mapping, **spec)
    return parse_file(src, name, data if isinstance(data, bytes) else data.encode(), limits,
                      lambda other: (files or {})[other])


def ok(result):
    bad = [p.error for p in result if p.error]
    assert not bad, bad
    return {p.id: p.fields for p in result}


def jsonl(*rows):
    return "\n".join(json.dumps(r) for r in rows) + "\n"


CHAT = {"conversation_id": "c1", "summary": " Customer asks; agent answers. ",
        "messages": [{"role": "system", "content": "be nice"}, {"role": "User", "content": "Hi  there\n"},
                     {"role": "assistant", "content": "Hello"}]}


def test_chatlog_jsonl_lines_ids_and_blank_lines():
    data = "\n" + jsonl(CHAT, {**CHAT, "conversation_id": None, "id": 7}) + "\n  \n"
    result = parse("chatlog", "exports/chats.jsonl", data)
    assert [(p.line, p.key, p.rows) for p in result] == [(2, None, 1), (3, None, 1)]
    recs = ok(result)
    assert recs["c1"] == {"dialogue": "Customer: Hi there\nAgent: Hello", "summary": "Customer asks; agent answers."}
    assert "7" in recs  # `conversation_id|id`: the second alternative, a number turned into text
    assert json.loads(result[0].raw)["conversation_id"] == "c1"


def test_json_records_path_html_bodies_and_agent_notes_as_summary():
    doc = {"export": {"items": [
        {"ticket": {"id": i}, "thread": [
            {"from": "Client", "body": f"<p>My <b>router</b> {i}<br>drops&nbsp;wifi &amp; more</p>"},
            {"from": "bot", "body": "<script>x()</script>auto-reply"},
            {"from": "agent", "body": "<div>Please update</div><div>the firmware.</div>"}],
         "notes": {"agent": f"Router {i} drops wifi; advised an update."}} for i in range(3)]}}
    m = FieldMapping(id="ticket.id", messages="thread", speaker="from", text="body", html=True,
                     skip_speakers=["bot"], speakers={"client": "Customer", "agent": "Agent"},
                     fields={"summary": "notes.agent"})
    result = parse("json", "helpdesk.json", json.dumps(doc), m, records_path="export.items")
    assert [p.key for p in result] == ["[0]", "[1]", "[2]"] and all(p.line is None for p in result)
    assert ok(result)["1"] == {"dialogue": "Customer: My router 1 drops wifi & more\nAgent: Please update the firmware.",
                               "summary": "Router 1 drops wifi; advised an update."}


def test_html_to_text():
    assert html_to_text("a&lt;b &amp; c") == "a<b & c"
    assert " ".join(html_to_text("<ul><li>one</li><li>two</li></ul><style>p{}</style>").split()) == "one two"
    assert html_to_text("plain") == "plain"


def test_paths_alternatives_list_indexes_and_optional_fields():
    row = {"a": {"b": [{"c": "first"}, {"c": "second"}]}, "x": "  ", "y": "why", "user.name": "dotted"}
    assert get_path(row, compile_path("a.b.1.c")) == "second"
    assert get_path(row, compile_path("a.b[0].c")) == "first"
    assert get_path(row, compile_path("missing|x|y")) == "why"  # blank and missing alternatives are skipped
    assert get_path(row, compile_path("user.name")) == "dotted"  # a column name with a dot, matched whole
    mapper = Mapper(FieldMapping(fields={"summary": "a.b.0.c", "topic": "nope|x"}, optional=["topic"]), LIMITS)
    assert mapper.map(row, "f-1") == ("f-1", {"summary": "first"})  # optional and blank: left out
    with pytest.raises(RowError, match=r"missing field: 'summary' \(path a.b.5.c\)"):
        Mapper(FieldMapping(fields={"summary": "a.b.5.c"}), LIMITS).map(row, "f-1")


def test_csv_quoted_newlines_line_numbers_and_numbers_as_text():
    data = ('review_id,stars,text\r\n'
            'r1,5,"Great place.\r\n\r\nWould go again, ""really""."\r\n'
            '\r\n'
            'r2,2,Meh\r\n')
    result = parse("yelp", "yelp.csv", data)
    assert [(p.line, p.id) for p in result] == [(2, "r1"), (6, "r2")]
    assert ok(result)["r1"] == {"review": 'Great place.\n\nWould go again, "really".', "rating": "5"}
    m = FieldMapping(id="n", fields={"review": "body|text", "rating": "score"})
    parquet_like = parse("csv", "x.csv", "n,score,text\n1,4.0,fine\n", m)
    assert ok(parquet_like) == {"1": {"review": "fine", "rating": "4"}}


def test_tsv_with_bom_and_id_from_file_and_line():
    data = "\ufeffrating\tverified_reviews\n5\tLove my Echo!\n4\t\"Sound is ok, setup \"\"easy\"\"\"\n"
    result = parse("amazon_alexa", "s3://bucket/alexa/amazon_alexa.tsv", data.encode("utf-8"))
    assert ok(result) == {"amazon_alexa-2": {"review": "Love my Echo!", "rating": "5"},
                          "amazon_alexa-3": {"review": 'Sound is ok, setup "easy"', "rating": "4"}}


def _parquet(rows):
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), buf)
    return buf.getvalue()


def test_parquet_rows_with_nested_columns():
    rows = [{"meta": {"id": f"p{i}"}, "turns": [{"who": "customer", "said": "Hi"}, {"who": "agent", "said": "Yo"}],
             "note": "greeting"} for i in range(2)]
    m = FieldMapping(id="meta.id", messages="turns", speaker="who", text="said", fields={"summary": "note"})
    result = parse("parquet", "t.parquet", _parquet(rows), m)
    assert [p.key for p in result] == ["[0]", "[1]"]
    assert ok(result)["p1"] == {"dialogue": "customer: Hi\nagent: Yo", "summary": "greeting"}


TURNS = FieldMapping(conversation="conv", speaker="who", text="text", timestamp="ts",
                     speakers={"customer": "Customer", "agent": "Agent"},
                     fields={"summary": "summary"}, optional=[])


def test_turns_csv_orders_by_timestamp_and_takes_the_first_non_empty_summary():
    data = ("conv,ts,who,text,summary\n"
            "A,2024-01-01T10:05:00Z,agent,Sure thing,\n"
            "B,2024-01-01T09:00:00,customer,Hello,B greets\n"
            "A,2024-01-01T10:00:00+00:00,customer,Can you help?,A asks for help\n"
            "B,1704099600,agent,Hi,\n"  # epoch seconds (09:00 UTC) mixed with ISO: still comparable
            "A,2024-01-01T10:05:00Z,customer,Thanks,\n")  # same time as the agent turn: stable order
    result = parse("turns_csv", "turns.csv", data, TURNS)
    assert [(p.key, p.line, p.rows) for p in result] == [("A", 2, 3), ("B", 3, 2)]
    recs = ok(result)
    assert recs["A"] == {"dialogue": "Customer: Can you help?\nAgent: Sure thing\nCustomer: Thanks",
                         "summary": "A asks for help"}
    assert recs["B"]["dialogue"] == "Customer: Hello\nAgent: Hi"
    assert sum(p.rows for p in result) == 5


def test_turns_parquet_numbers_and_a_turn_without_conversation():
    rows = [{"conv": 1, "ts": 3, "who": "agent", "text": "Done", "summary": "refund"},
            {"conv": 1, "ts": 1, "who": "customer", "text": "Refund please", "summary": None},
            {"conv": None, "ts": 2, "who": "agent", "text": "stray", "summary": None}]
    result = parse("turns_parquet", "t.parquet", _parquet(rows), TURNS)
    assert sum(p.rows for p in result) == 3
    good = [p for p in result if not p.error]
    assert good[0].id == "1" and good[0].fields["dialogue"] == "Customer: Refund please\nAgent: Done"
    stray = next(p for p in result if p.error)
    assert stray.key == "[2]" and stray.error.startswith("missing field: turn row has no conversation id")


def test_dialogsum_test_rows_have_all_references_and_topic():
    row = {"fname": "test_1", "dialogue": "#Person1#: Is gate 4 open?\r\n#Person2#:   Yes,\tsince noon.",
           "summary1": "Gate 4 is open.", "summary2": "It opened at noon.", "summary3": " ", "topic1": "airport"}
    recs = ok(parse("dialogsum", "dialogsum.test.jsonl", jsonl(row)))
    assert recs["test_1"] == {"dialogue": "#Person1#: Is gate 4 open?\n#Person2#: Yes, since noon.",
                              "summary": "Gate 4 is open.", "summaries": ["Gate 4 is open.", "It opened at noon."],
                              "topic": "airport"}


def test_text_dialogue_speakers_map_and_skipped_speakers():
    m = FieldMapping(id="id", dialogue="body", speakers={"cust": "Customer", "rep": "Agent"},
                     skip_speakers=["System"], fields={"summary": "s"})
    row = {"id": "1", "s": "Solved.", "body": "SYSTEM: chat started\nCust: it broke\n\nRep :  fixed  now"}
    assert ok(parse("jsonl", "t.jsonl", jsonl(row), m))["1"]["dialogue"] == "Customer: it broke\nAgent: fixed now"


def test_samsum_json_array():
    doc = [{"id": "13818513", "summary": "Amanda will bring cookies.",
            "dialogue": "Amanda: I baked  cookies. Want some?\r\nJerry: Sure!\r\nAmanda: I'll bring you tomorrow :-)"}]
    assert ok(parse("samsum", "val.json", json.dumps(doc)))["13818513"]["dialogue"] == \
        "Amanda: I baked cookies. Want some?\nJerry: Sure!\nAmanda: I'll bring you tomorrow :-)"


def test_tweetsumm_prefixes_continuation_lines_and_entities():
    row = {"id": "t1", "summaries": ["Customer cannot log in. Agent resets.", "Login fixed."],
           "dialogue": "\tCustomer:\t@Help can't log in &amp; app crashes\nVersion: 5.1\n\n"
                       "Thanks!\n\tAgent:\t@12 Try a reset &lt;3\n\tCustomer:\tworks"}
    rec = ok(parse("tweetsumm", "tweetsumm_test.jsonl", jsonl(row)))["t1"]
    assert rec["dialogue"] == ("Customer: @Help can't log in & app crashes Version: 5.1 Thanks!\n"
                               "Agent: @12 Try a reset <3\nCustomer: works")
    assert rec["summary"] == "Customer cannot log in. Agent resets." and len(rec["summaries"]) == 2


def test_ibm_customer_care_speaker_keys_and_final_agent_reply():
    doc = [{"dialogHeader": {"sessionID": "s1", "company": "Acme"},
            "dialogContent": [{"client": "TMobile", "message": "Big news &amp; more", "tweet_ID": "1"},
                              {"client1": "bob", "message": "@TMobile what\nabout me?", "tweet_ID": "2"}],
            "agentURL": {"tweet_ID": "3", "url_utterance": "@bob See https://example.com/help"}},
           {"dialogHeader": {}, "dialogContent": [{"agent": "Acme", "message": "Hi", "tweet_ID": "9"},
                                                 {"client": "ann", "message": "Hello", "tweet_ID": "10"}],
            "agentURL": {"tweet_ID": "9", "url_utterance": "Hi"}}]  # already in the thread: not repeated
    recs = ok(parse("ibm_customer_care", "dev.json", json.dumps(doc)))
    assert recs["s1"] == {"dialogue": "Customer: Big news & more\nCustomer: @TMobile what about me?\n"
                                      "Agent: @bob See https://example.com/help"}
    assert recs["dev-[1]"] == {"dialogue": "Agent: Hi\nCustomer: Hello"}  # no session id: file and key


def test_wnut17_conll_sentences_entities_and_space_separator():
    data = ("Bob\tB-person\nmoved\tO\nto\tO\nNew\tB-location\nYork\tI-location\nwith\tO\nstar\tI-creative-work\n"
            "wars\tI-creative-work\n\t\n"  # a tab-only line separates sentences, as in wnut17train.conll
            "nothing O\nhere O\n\n\n")
    result = parse("wnut17", "wnut17train.conll", data)
    assert [p.line for p in result] == [1, 10]
    recs = ok(result)
    first = recs["wnut17train-1"]
    assert first["entities"] == "person: Bob; location: New York; creative-work: star wars"
    assert first["sentence"].startswith("Bob moved to New York") and first["tags"][0] == "B-person"
    assert recs["wnut17train-10"] == {"sentence": "nothing here", "tokens": ["nothing", "here"],
                                      "tags": ["O", "O"], "entities": "none"}
    assert entities(["a", "b", "c"], ["I-person", "I-group", "I-group"]) == "person: a; group: b c"


def test_codexglue_pairs_lines_of_java_and_its_cs_sibling():
    java = "int a() {return 1;}\nvoid b() {}\n"
    cs = "int A(){return 1;}\nvoid B(){}\n"
    result = parse("codexglue_java_cs", "data/valid.java-cs.txt.java", java, files={"valid.java-cs.txt.cs": cs.encode()})
    recs = ok(result)
    assert [p.line for p in result] == [1, 2]
    assert recs["valid.java-cs.txt-2"] == {"java": "void b() {}", "cs": "void B(){}"}


def test_a_source_mapping_replaces_the_preset_mapping():
    row = {"fname": "x1", "dialogue": "A: hi\nB: hello", "notes": {"short": "They greet."}}
    m = FieldMapping(id="fname", dialogue="dialogue", fields={"summary": "notes.short"})
    assert ok(parse("dialogsum", "d.jsonl", jsonl(row), m)) == {"x1": {"dialogue": "A: hi\nB: hello",
                                                                       "summary": "They greet."}}


def test_every_preset_is_declared():
    from components.common.config import PRESETS as NAMES

    assert set(PRESETS) == set(NAMES)
