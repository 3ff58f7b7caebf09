"""The HTML evaluation report and the CLI summary table, from hand-built metrics.json and predictions."""
from __future__ import annotations

import base64
import copy
import struct
from html.parser import HTMLParser

import pytest
from rich.console import Console

from components.evaluate.charts import DPI, FIGSIZE, bar_chart_png, loss_curve_png
from components.evaluate.report import render_report, worst_rows
from components.evaluate.summary_table import print_summary_table, summary_rows

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
XSS = "<script>alert(1)</script>"
LONG = "Customer: my parcel never arrived. " * 200


def sample_metrics() -> dict:
    rouge = {"candidate": {"rouge1": 42.5, "rouge2": 18.25, "rougeL": 35.125, "rougeLsum": 38.0},
             "base": {"rouge1": 20.0, "rouge2": 5.5, "rougeL": 17.75, "rougeLsum": 18.5},
             "champion": {"rouge1": 40.0, "rouge2": 17.0, "rougeL": 33.0, "rougeLsum": 36.0}}
    rating = {"candidate": {"accuracy": 55.0, "mae": 0.75, "parsed": 100.0},
              "base": {"accuracy": 60.0, "mae": 0.6, "parsed": 98.0},
              "champion": {"accuracy": 54.0, "mae": 0.8, "parsed": 100.0}}
    return {
        "schema": 2,
        "tasks": {
            "summarization": {"family": "rouge", "primary": "rougeL", "lower_is_better": [], "n": 8,
                              "scores": rouge,
                              "ci": {"candidate": [33.0, 37.5], "base": [15.0, 20.0], "champion": [31.0, 35.0]},
                              "delta": {"champion": {"mean": 2.125, "low": 0.5, "high": 3.75},
                                        "base": {"mean": 17.375, "low": 14.0, "high": 20.5}}},
            "review_rating": {"family": "rating", "primary": "accuracy", "lower_is_better": ["mae"], "n": 6,
                              "scores": rating,
                              "ci": {"candidate": [40.0, 70.0], "base": [45.0, 75.0], "champion": [39.0, 69.0]},
                              "delta": {"champion": {"mean": 1.0, "low": -3.0, "high": 5.0},
                                        "base": {"mean": -5.0, "low": -9.0, "high": -1.0}}},
        },
        "primary_task": "summarization", "primary_metric": "rougeL", "confidence": 0.95, "resamples": 1000,
        "gate": {"promote": True, "baseline": "champion", "reason": "rougeL +2.12 [0.50, 3.75] >= margin 0.5",
                 "checks": [{"name": "primary_margin", "passed": True, "detail": "low 0.50 >= 0.5"},
                            {"name": "forgetting:review_rating", "passed": True, "detail": "-3.00 >= -5"}]},
        "champion_version": "3", "n_examples": 14, "eval_set_sha256": "ab12cd34ef56" + "0" * 52,
        "eval_set_uri": "s3://mixtune/runs/r1/examples/test.parquet", "dataset_version": "dv-2024-06-01",
        "model_uri": "s3://mixtune/runs/r1/model", "base_model_uri": "s3://mixtune/base/t5-small",
        "champion_uri": "models:/mixtune@champion",
        "generation": {"num_beams": 1, "max_new_tokens": 64, "batch_size": 16},
        "generate_seconds": {"candidate": 3.25, "base": 3.5, "champion": 3.0},
    }


def _row(rid, task, inputs, refs, scores, texts=None):
    texts = texts or {}
    return {"id": rid, "task": task, "inputs": inputs, "references": refs,
            "base": texts.get("base", f"base says {rid}"), "candidate": texts.get("candidate", f"cand says {rid}"),
            "champion": texts.get("champion", f"champ says {rid}"),
            "base_score": scores[0], "candidate_score": scores[1], "champion_score": scores[2]}


def sample_predictions() -> list[dict]:
    summ = [
        _row("s7", "summarization", "Agent: hi", ["r7"], (10.0, 80.0, 70.0)),
        _row("s3", "summarization", XSS, ["ref a", "ref b", "ref c"], (0.0, 5.0, 9.0),
             {"candidate": "<img src=x onerror=alert(2)>"}),
        _row("s1", "summarization", LONG, ["late parcel"], (3.0, 12.5, 20.0)),
        _row("s2", "summarization", "Agent: refund?", ["refund issued", "refund given"], (1.0, 5.0, 4.0)),
        _row("s5", "summarization", "Customer: thanks", ["thanked"], (2.0, 40.0, 41.0)),
        _row("s4", "summarization", "Agent: bye", ["said bye"], (0.0, 12.5, 11.0)),
        _row("s6", "summarization", "Agent: ok", ["ok"], (0.0, 99.0, 98.0)),
        _row("s8", "summarization", "Agent: yes", ["yes"], (0.0, 60.0, 50.0)),
    ]
    rating = [_row(f"r{i}", "review_rating", f"Review {i}: fine", [str(1 + i % 5)], (50.0, s, 100.0 - s))
              for i, s in enumerate([100.0, 0.0, 100.0, 0.0, 0.0, 100.0])]
    return summ + rating


def sample_history() -> list[dict]:
    return [{"step": s, "loss": 4.0 / (1 + s / 10), "lr": 1e-3, "tokens_per_second": 900.0} for s in range(0, 200, 5)]


def no_champion(metrics: dict, predictions: list[dict]) -> tuple[dict, list[dict]]:
    m = copy.deepcopy(metrics)
    m.update(champion_version=None, champion_uri=None)
    m["gate"] = {"promote": True, "baseline": "base", "reason": "first model", "checks": []}
    for t in m["tasks"].values():
        t["scores"]["champion"], t["ci"]["champion"], t["delta"]["champion"] = None, None, None
    return m, [{**r, "champion": None, "champion_score": None} for r in predictions]


class Node:
    def __init__(self, tag: str, attrs: dict):
        self.tag, self.attrs, self.content = tag, attrs, []  # child Nodes and text, in document order

    @property
    def children(self) -> list["Node"]:
        return [c for c in self.content if isinstance(c, Node)]

    def all_text(self) -> str:
        return "".join(c if isinstance(c, str) else c.all_text() for c in self.content)

    def find_all(self, tag: str, cls: str | None = None) -> list["Node"]:
        out = []
        for c in self.children:  # document order
            if c.tag == tag and (cls is None or cls in c.attrs.get("class", "").split()):
                out.append(c)
            out += c.find_all(tag, cls)
        return out


class TreeParser(HTMLParser):
    """A small DOM: enough to check structure and text without substring matching."""
    VOID = {"meta", "img", "br", "link", "input", "hr"}

    def __init__(self, html: str):
        super().__init__(convert_charrefs=True)
        self.root = Node("root", {})
        self.stack = [self.root]
        self.feed(html)
        self.close()

    def handle_starttag(self, tag, attrs):
        node = Node(tag, {k: v or "" for k, v in attrs})
        self.stack[-1].content.append(node)
        if tag not in self.VOID:
            self.stack.append(node)

    def handle_endtag(self, tag):
        if tag in self.VOID:
            return
        assert self.stack[-1].tag == tag, f"</{tag}> closes <{self.stack[-1].tag}>"
        self.stack.pop()

    def handle_data(self, data):
        self.stack[-1].content.append(data)


def parse(html: str) -> Node:
    p = TreeParser(html)
    assert p.stack == [p.root], "unclosed tags"
    return p.root


def table_rows(table: Node) -> list[list[str]]:
    return [[c.all_text().strip() for c in tr.children if c.tag in ("td", "th")] for tr in table.find_all("tr")]


def by_task(doc: Node, cls: str) -> dict[str, Node]:
    return {t.attrs["data-task"]: t for t in doc.find_all("table", cls)}


@pytest.fixture(scope="module")
def full_html() -> str:
    return render_report(sample_metrics(), sample_predictions(), sample_history(), worst=3)


def test_user_text_is_escaped_never_markup(full_html):
    doc = parse(full_html)
    assert XSS not in full_html and "<img src=x" not in full_html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in full_html
    assert doc.find_all("script") == []
    texts = [p.all_text() for p in doc.find_all("pre", "scroll")]
    assert XSS in texts and "<img src=x onerror=alert(2)>" in texts
    # Self-contained: no external fetches of any kind.
    assert doc.find_all("link") == []
    for node in doc.find_all("img"):
        assert node.attrs["src"].startswith("data:image/png;base64,")


def test_header_gate_and_both_charts(full_html):
    doc = parse(full_html)
    header = dict(r for r in table_rows(doc.find_all("section")[0].find_all("table")[0]))
    assert header["model"] == "s3://mixtune/runs/r1/model"
    assert header["champion evaluated against"].startswith("version 3")
    assert "sha256 ab12cd34ef56" in header["evaluation set"] and "14 examples" in header["evaluation set"]
    assert header["dataset version"] == "dv-2024-06-01"
    assert "num_beams=1" in header["generation"] and "max_new_tokens=64" in header["generation"]
    assert doc.find_all("span", "verdict")[0].all_text() == "promote"
    checks = [[c.all_text().strip() for c in tr.children] for tr in doc.find_all("tr", "check")]
    assert checks == [["✓ pass", "primary_margin", "low 0.50 >= 0.5"],
                      ["✓ pass", "forgetting:review_rating", "-3.00 >= -5"]]
    imgs = doc.find_all("img")
    assert len(imgs) == 2
    for img in imgs:
        png = base64.b64decode(img.attrs["src"].split(",", 1)[1])
        assert png.startswith(PNG_MAGIC)


def test_metric_tables_show_every_metric_with_ci_and_coloured_deltas(full_html):
    doc = parse(full_html)
    metrics = by_task(doc, "metrics")
    assert table_rows(metrics["summarization"]) == [
        ["metric", "candidate", "base", "champion"],
        ["rouge1", "42.50", "20.00", "40.00"],
        ["rouge2", "18.25", "5.50", "17.00"],
        ["rougeL", "35.12 [33.00, 37.50]", "17.75 [15.00, 20.00]", "33.00 [31.00, 35.00]"],
        ["rougeLsum", "38.00", "18.50", "36.00"],
    ]
    assert table_rows(metrics["review_rating"])[2] == ["mae (lower is better)", "0.75", "0.60", "0.80"]
    deltas = {t: [(c.all_text(), c.attrs["class"]) for c in tab.find_all("td", "num")]
              for t, tab in zip(("summarization", "review_rating"), doc.find_all("table", "deltas"))}
    assert deltas["summarization"] == [("+2.12 [+0.50, +3.75]", "num better"), ("+17.38 [+14.00, +20.50]", "num better")]
    # Crossing zero stays uncoloured; entirely below zero is red.
    assert deltas["review_rating"] == [("+1.00 [-3.00, +5.00]", "num "), ("-5.00 [-9.00, -1.00]", "num worse")]


def test_worst_rows_are_lowest_candidate_scores_ties_by_id(full_html):
    preds = sample_predictions()
    assert [r["id"] for r in worst_rows(preds, "summarization", 5)] == ["s2", "s3", "s1", "s4", "s5"]
    assert [r["id"] for r in worst_rows(preds, "review_rating", 10)] == ["r1", "r3", "r4", "r0", "r2", "r5"]
    worst = by_task(parse(full_html), "worst")
    assert [tr.attrs["data-id"] for tr in worst["summarization"].find_all("tr", "example")] == ["s2", "s3", "s1"]
    assert [tr.attrs["data-id"] for tr in worst["review_rating"].find_all("tr", "example")] == ["r1", "r3", "r4"]
    header, _, xss_row, long_row = table_rows(worst["summarization"])
    assert header == ["id", "dialogue / inputs", "references", "base", "candidate", "champion"]
    assert xss_row[1] == XSS and xss_row[5] == "champ says s3\nscore 9.00"
    assert xss_row[3] == "base says s3\nscore 0.00"
    s3 = worst["summarization"].find_all("tr", "example")[1]
    assert [li.all_text() for li in s3.find_all("li")] == ["ref a", "ref b", "ref c"]
    # Long inputs are kept whole, in a cell that scrolls.
    assert long_row[1] == LONG.strip()
    assert ".scroll{max-height:" in full_html and "overflow:auto" in full_html


def test_no_champion_and_no_history_still_render():
    metrics, preds = no_champion(sample_metrics(), sample_predictions())
    for history in (None, []):
        doc = parse(render_report(metrics, preds, history))
        header = dict(r for r in table_rows(doc.find_all("section")[0].find_all("table")[0]))
        assert header["champion evaluated against"] == "none"
        assert table_rows(by_task(doc, "metrics")["summarization"])[0] == ["metric", "candidate", "base"]
        worst = by_task(doc, "worst")["summarization"]
        assert table_rows(worst)[0] == ["id", "dialogue / inputs", "references", "base", "candidate"]
        assert len(worst.find_all("tr", "example")) == 5
        assert [c.all_text() for c in doc.find_all("table", "deltas")[0].find_all("td")][0] == "candidate − base"
        assert len(doc.find_all("img")) == 1  # the bar chart; no loss curve
        assert "no loss curve" in doc.find_all("p", "note")[0].all_text()


def test_summary_rows_and_rich_table_match_the_numbers():
    metrics = sample_metrics()
    assert summary_rows(metrics) == [
        ("summarization", "rougeL", "17.75", "33.00", "35.12 [33.00, 37.50]", "+2.12 [+0.50, +3.75]", "+17.38"),
        ("review_rating", "accuracy", "60.00", "54.00", "55.00 [40.00, 70.00]", "+1.00 [-3.00, +5.00]", "-5.00"),
    ]
    m, _ = no_champion(metrics, [])
    assert summary_rows(m)[1] == ("review_rating", "accuracy", "60.00", "—", "55.00 [40.00, 70.00]", "—", "-5.00")
    con = Console(record=True, width=200, color_system="truecolor")
    print_summary_table(metrics, con)
    text = con.export_text(clear=False)
    for row in summary_rows(metrics):
        assert all(cell in text for cell in row)
    assert "gate: promote" in text and "✓ primary_margin" in text
    # The forgetting delta vs base is styled red, the supported gain green.
    styled = con.export_text(styles=True)
    assert "\x1b[31m-5.00" in styled and "\x1b[32m+2.12" in styled


def _png_size(png: bytes) -> tuple[int, int]:
    return struct.unpack(">II", png[16:24])


def test_charts_are_fixed_size_pngs_and_leak_no_figures():
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    expected = (round(FIGSIZE[0] * DPI), round(FIGSIZE[1] * DPI))
    for m in (sample_metrics(), no_champion(sample_metrics(), [])[0]):
        png = bar_chart_png(m)
        assert png.startswith(PNG_MAGIC) and _png_size(png) == expected
    loss = loss_curve_png(sample_history())
    assert loss is not None and loss.startswith(PNG_MAGIC) and _png_size(loss) == expected
    assert loss_curve_png(None) is None and loss_curve_png([]) is None
    assert loss_curve_png([{"step": 1, "loss": float("nan")}]) is None
    assert plt.get_fignums() == before


def test_sources_of_a_task_get_their_own_rows_in_the_report_and_the_table():
    metrics = sample_metrics()
    metrics["tasks"]["summarization"]["sources"] = {
        "chats": {"n": 4, "scores": {"candidate": 30.0, "base": 10.0, "champion": 34.5},
                  "delta": {"champion": {"mean": -4.5, "low": -8.0, "high": -1.0},
                            "base": {"mean": 20.0, "low": 15.0, "high": 25.0}}},
        "tweetsumm": {"n": 4, "scores": {"candidate": 40.25, "base": 25.5, "champion": 31.5},
                      "delta": {"champion": {"mean": 8.75, "low": 5.0, "high": 12.5},
                                "base": {"mean": 14.75, "low": 10.0, "high": 19.5}}}}
    rows = summary_rows(metrics)
    assert [r[0] for r in rows] == ["summarization", "  summarization/chats", "  summarization/tweetsumm",
                                    "review_rating"]
    assert rows[1] == ("  summarization/chats", "rougeL", "10.00", "34.50", "30.00", "-4.50 [-8.00, -1.00]", "+20.00")
    con = Console(record=True, width=200, color_system="truecolor")
    print_summary_table(metrics, con)
    assert "\x1b[31m-4.50 [-8.00, -1.00]" in con.export_text(styles=True)  # an old source that got worse: red
    html = render_report(metrics, [], None)
    table = html.split('<table class="sources" data-task="summarization">')[1].split("</table>")[0]
    assert '<tr data-source="chats">' in table and "34.50" in table and 'class="num worse">-4.50' in table
    assert 'data-task="review_rating"' not in html.split('class="sources"')[-1].split("</table>")[0]


def test_faithfulness_table_best_random_worst_and_marked_facts():
    from tests.components.common.gate_metrics import faithfulness

    metrics = sample_metrics()
    metrics["tasks"]["summarization"]["faithfulness"] = faithfulness(
        {"candidate": (12.5, 0.0), "base": (40.0, 62.5), "champion": (3.0, 0.0)})
    preds = sample_predictions()
    text = "Jamie refunds 3.95 euros to <b>Hugo</b> for 3.95"
    preds[0] |= {"candidate": text, "candidate_unsupported": ["3.95", "Jamie"], "candidate_degenerate": None,
                 "base_degenerate": "loop", "base_unsupported": []}
    html = render_report(metrics, preds, sample_history(), worst=3)
    doc = parse(html)
    table = by_task(doc, "faithfulness")["summarization"]
    rows = table_rows(table)
    assert rows[0] == ["faithfulness", "candidate", "base", "champion", "candidate − champion v3", "candidate − base"]
    assert rows[1][:2] == ["unsupported facts % (lower is better)", "12.50 [10.50, 14.50]"]
    # More unsupported facts than the champion, with the whole interval above 0: red; fewer than the base: green.
    cells = table.find_all("tr")[1].find_all("td", "num")
    assert (cells[3].all_text(), cells[3].attrs["class"]) == ("+9.50 [+8.50, +10.50]", "num worse")
    assert cells[4].attrs["class"] == "num better"
    # Worst, best and random examples, no row twice; s7 (candidate 80) is among the best.
    groups = {t.attrs["data-kind"]: [tr.attrs["data-id"] for tr in t.find_all("tr", "example")]
              for t in doc.find_all("table", "examples") if t.attrs["data-task"] == "summarization"}
    assert groups["worst"] == ["s2", "s3", "s1"] and groups["best"] == ["s6", "s7", "s8"]
    assert len(groups["random"]) == 2 and not set(groups["random"]) & set(groups["worst"] + groups["best"])
    # The unsupported facts are marked where they are written; the output stays escaped.
    assert html.count('<mark class="unsupported">3.95</mark>') == 2 and '<mark class="unsupported">Jamie</mark>' in html
    assert "&lt;b&gt;Hugo&lt;/b&gt;" in html and "<b>Hugo</b>" not in html
    assert "degenerate: loop" in html and "2 unsupported" in html


def test_summary_rows_list_the_faithfulness_rates():
    from tests.components.common.gate_metrics import faithfulness

    metrics = sample_metrics()
    metrics["tasks"]["summarization"]["faithfulness"] = faithfulness(
        {"candidate": (12.5, 0.0), "base": (40.0, 62.5), "champion": (3.0, 0.0)})
    rows = summary_rows(metrics)
    assert [r[:2] for r in rows[:4]] == [("summarization", "rougeL"), ("summarization", "unsupported ↓"),
                                         ("summarization", "degenerate ↓"), ("summarization", "name_coverage")]
    assert rows[1][2:] == ("40.00", "3.00", "12.50 [10.50, 14.50]", "+9.50 [+8.50, +10.50]", "-27.50")


def test_the_summary_table_fits_80_columns_without_breaking_a_number():
    metrics = sample_metrics()
    con = Console(record=True, width=80, color_system=None)
    print_summary_table(metrics, con)
    text = con.export_text()
    assert max(len(line) for line in text.splitlines()) <= 80, text
    for row in summary_rows(metrics):  # every value whole; an interval on the line under its value
        for cell in row[2:]:
            for part in cell.split(" ["):
                assert part.strip("[]") in text, (part, text)
    assert "summarization rougeL" in text and "review_rating accuracy" in text
    assert "gate: promote" in text
