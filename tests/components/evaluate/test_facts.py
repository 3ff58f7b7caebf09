"""The fact extractor and its support check on hand-built cases: every fact kind, paraphrased numbers and
dates, names with titles and possessives, and words that only look like names."""
from __future__ import annotations

import pytest

from components.evaluate.facts import extract
from components.evaluate.faithfulness import is_supported, support_of, unsupported_facts


def kinds(text: str, context: str = "") -> list[tuple[str, str]]:
    return [(f.kind, f.text) for f in extract(text, context)]


def flagged(summary: str, dialogue: str) -> list[str]:
    return [f.text for f in unsupported_facts(summary, dialogue)[1]]


# --- amounts and numbers ---------------------------------------------------------------------------


@pytest.mark.parametrize("summary", ["The refund is 58,95 euros.", "The refund is €58.95.", "It cost 58.95 EUR."])
def test_amounts_match_across_decimal_comma_and_currency(summary):
    assert flagged(summary, "Agent: I have refunded 58.95 euros to your card.") == []
    assert flagged(summary, "Agent: You paid €58,95.") == []


def test_thousands_separators_and_invented_amounts():
    dialogue = "Customer: The laptop was $1,299.00 and the bag 100.00."
    assert flagged("The laptop cost 1299 dollars and the bag $100.", dialogue) == []
    assert flagged("The laptop cost $1,399.00.", dialogue) == ["$1,399.00"]
    assert kinds("It was 1.234,56 euros.") == [("amount", "1.234,56")]
    assert extract("It was 1.234,56 euros.")[0].key == ("num", "1234.56")


def test_numbers_written_as_words_both_ways():
    assert flagged("It arrives in three days.", "Agent: It arrives in 3 days.") == []
    assert flagged("It arrives in 3 days.", "Agent: It arrives in three days.") == []
    assert flagged("It arrives in twenty-five days.", "Agent: 25 days.") == []
    assert flagged("It arrives in five days.", "Agent: It arrives in 3 days.") == ["five"]
    assert flagged("It took 2 days.", "Customer: I waited a couple of days.") == []


def test_ordinals():
    assert flagged("His 11th birthday.", "Jordan: I'm 11 now!") == []
    assert flagged("It is the third time.", "Customer: this is the 3rd time I call") == []
    assert flagged("It is the fifth time.", "Customer: this is the 3rd time I call") == ["fifth"]


def test_times_and_hours():
    assert flagged("They meet at 7.30 pm.", "Anna: see you at 19:30") == []
    assert flagged("The party is at 19:30.", "Anna: come at 1930") == []
    assert flagged("He leaves at 4.30.", "Jane: let's meet at 4:30") == []
    assert flagged("The match is at 2.", "Steve: England playing tomorrow at 2:00!") == []
    assert flagged("They meet at 12.", "Barry: let's meet at noon") == []
    assert flagged("They meet at 8.30 pm.", "Anna: see you at 19:30") == ["8.30 pm"]


def test_a_number_inside_a_date_supports_no_other_number():
    assert flagged("It arrives in 5 days.", "Agent: it shipped on September 5.") == ["5"]


# --- dates -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("written", ["5 September", "September 5th", "Sept. 5", "5th of September", "Sep 5"])
def test_dates_in_any_order_and_abbreviation(written):
    (fact,) = extract(f"The pickup is on {written}.")
    assert fact.kind == "date" and fact.key == ("date", 9, 5)
    assert flagged(f"The pickup is on {written}.", "Agent: a courier comes on September 5.") == []
    assert flagged(f"The pickup is on {written}.", "Agent: a courier comes on September 6.") != []


def test_numeric_dates_are_read_both_ways():
    assert flagged("Delivered on 05/09.", "Agent: it was delivered on 5 September.") == []
    assert flagged("Delivered on 05/09.", "Agent: it was delivered on May 9.") == []
    assert flagged("Delivered on 09/05.", "Agent: it was delivered on 5 September.") == []
    assert flagged("Delivered on 07/09.", "Agent: it was delivered on 5 September.") == ["07/09"]
    assert flagged("Delivered on 2024-09-05.", "Agent: it was delivered on 5 September.") == []


def test_a_month_alone_is_a_date_only_after_a_preposition():
    assert kinds("It ends in May.") == [("date", "May")]
    assert kinds("May I ask why?") == []
    assert flagged("They go to Greece in August.", "Pauline: so august as we said?") == []
    assert flagged("It ends in June.", "Agent: it ends on May 31.") == ["June"]
    assert flagged("It ends in May.", "Agent: it ends on May 31.") == []
    assert kinds("There were 2 separate trains.") == [("number", "2")]  # "2 sep" is no date


def test_weekdays_are_not_names():
    assert [f for f in extract("Beth works on Saturdays and Monday.") if f.kind == "name"][0].text == "Beth"


# --- ids and e-mails -------------------------------------------------------------------------------


def test_order_and_ticket_ids():
    assert kinds("Order #4417 and ticket TK-2231.") == [("id", "#4417"), ("id", "TK-2231")]
    assert flagged("Ticket TK-2231 and order #4417.", "Agent: ticket TK 2231 is open for order 4417.") == []
    assert flagged("Ticket TK-2232 is open.", "Agent: ticket TK-2231 is open.") == ["TK-2232"]
    assert flagged("Order 483920 is late.", "Customer: it's anna.483920@example.com") == []
    assert flagged("Order 483921 is late.", "Customer: it's anna.483920@example.com") == ["483921"]
    assert flagged("Call 8887503284.", "Agent: call us at 888 750 3284.") == []


def test_versions_and_units_are_read_whole():
    assert kinds("He runs ios11.1 and 11.1.2.") == [("id", "ios11.1"), ("id", "11.1.2")]
    assert flagged("The 11.1 update fixes it.", "Agent: iOS 11.1.1 should fix it.") == []
    assert flagged("He does not get 100mbps.", "Customer: I pay for 100 Mbps") == []


def test_emails():
    dialogue = "Customer: The email is Hugo.Novak@example.com."
    assert kinds("write to hugo.novak@example.com.") == [("email", "hugo.novak@example.com")]
    assert flagged("The account is hugo.novak@example.com.", dialogue) == []
    assert flagged("The account is hugo.nowak@example.com.", dialogue) == ["hugo.nowak@example.com"]


# --- names -----------------------------------------------------------------------------------------


def test_titles_possessives_and_contractions():
    dialogue = "Agent: Hello Mr. Ito, this is Sam.\nCustomer: Hi, Hugo Novak here."
    assert flagged("Ito's refund was approved by Sam.", dialogue) == []
    assert flagged("Mr. Ito and Hugo's order.", dialogue) == []
    assert [(f.text, f.key) for f in extract("Mr. Ito called.")] == [("Mr. Ito", ("name", "ito"))]
    assert [f.key for f in extract("Mohammad'll bring Hugo's wallet.")] == [("name", "mohammad"), ("name", "hugo")]
    assert flagged("Mr. Tanaka's refund.", dialogue) == ["Mr. Tanaka's"]


def test_sentence_boundaries_split_names():
    assert [f.text for f in extract("Paul shares it with Luke. In exchange Luke pays.")] == ["Paul", "Luke", "Luke"]
    assert [f.text for f in extract("J. K. Rowling wrote it.")] == ["J. K. Rowling"]


@pytest.mark.parametrize("summary", ["The customer wants a refund.", "Customer asks for a refund. Refunds take a week.",
                                     "Agents says the seat is free.", "Agent sends the URL, then a DM.",
                                     "Agent shows the procedure,Finally the customer is happy.", "Today is fine."])
def test_common_words_at_a_sentence_start_are_not_names(summary):
    assert [f for f in extract(summary, "Agent: refunds are possible.") if f.kind == "name"] == []


def test_names_are_supported_by_their_variants_and_flagged_when_invented():
    dialogue = "Ana: wanna visit grandma tomorrow?\nAlicja: First Italy, now Korea!\nJacky: I'll call you."
    assert flagged("Anna will visit. They loved the Italian and Korean evenings. Jack calls.", dialogue) == []
    assert flagged("Hugo will visit grandma.", dialogue) == ["Hugo"]
    assert flagged("They flew to Thailand.", dialogue) == ["Thailand"]
    assert flagged("Anna met Gerry at Virgin Trains.", dialogue + "\nGerry: @VirginTrains hi") == []  # the handle
    assert flagged("Anna met Gerry at Virgin Trains.", dialogue + "\nGerry: hi") == ["Virgin Trains"]


def test_multi_word_names_and_compounds():
    dialogue = "Paul: you're having Thanksgiving dinner with us\nA: reinstall Lightroom and PowerShell, WiFi off"
    assert flagged("Paul celebrates Thanksgiving Day. He reinstalls Light room.", dialogue) == []
    assert flagged("He opens Power Shell and the Wi-Fi settings.", dialogue) == []


def test_dialogsum_speaker_placeholders_are_names():
    dialogue = "#Person1#: Hi, I'm Steven.\n#Person2#: Hello."
    assert kinds("#Person1# greets #Person2#.") == [("name", "#Person1#"), ("name", "#Person2#")]
    assert flagged("#Person1# greets #Person2#.", dialogue) == []
    assert flagged("#Person3# greets Steven.", dialogue) == ["#Person3#"]


def test_links_and_handles_are_not_facts():
    assert extract("See https://t.co/X7Sh123 or @AmazonHelp 42") == extract("See or 42")[:0] + [
        f for f in extract("See https://t.co/X7Sh123 or @AmazonHelp 42") if f.text == "42"]


def test_support_is_cached_and_reusable():
    support = support_of("Agent: order 4417 ships on May 9.")
    assert support is support_of("Agent: order 4417 ships on May 9.")
    assert all(is_supported(f, support) for f in extract("Order #4417 ships on 9 May."))
