"""A deterministic generator of realistic customer-support chat logs with reference summaries.

Output rows match the chat-log input format: {conversation_id, messages: [{role, content}], summary}.
Several intents; names, products, order numbers, dates and amounts vary, and the summary restates
them, so a small model must learn both the summary shape and to copy the facts from the chat.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

FIRST = ["Anna", "Ben", "Carla", "David", "Elena", "Farid", "Grace", "Hugo", "Irene", "Jonas", "Kemal",
         "Laura", "Marco", "Nadia", "Oscar", "Priya", "Quentin", "Rosa", "Samir", "Tara", "Umar", "Vera",
         "Walter", "Xenia", "Yusuf", "Zoe"]
LAST = ["Adams", "Becker", "Costa", "Dubois", "Evans", "Fischer", "Garcia", "Hansen", "Ito", "Jensen",
        "Kowalski", "Lopez", "Meyer", "Novak", "Olsen", "Patel", "Rossi", "Silva", "Tanaka", "Weber"]
AGENTS = ["Sam", "Alex", "Jordan", "Taylor", "Morgan", "Riley", "Casey", "Jamie"]
PRODUCTS = ["wireless headphones", "coffee grinder", "standing desk", "robot vacuum", "electric kettle",
            "smart watch", "hiking backpack", "air purifier", "office chair", "bluetooth speaker",
            "laptop stand", "blender", "desk lamp", "yoga mat", "baby monitor", "phone case"]
PLANS = ["Basic", "Plus", "Premium", "Family", "Business"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September",
          "October", "November", "December"]
CITIES = ["Lyon", "Leeds", "Porto", "Munich", "Gdansk", "Turin", "Ghent", "Bergen", "Malmo", "Cork"]
STREETS = ["Oak Street", "Mill Road", "King Avenue", "Park Lane", "River Way", "Station Road"]


def _facts(rng: random.Random) -> dict:
    first, last = rng.choice(FIRST), rng.choice(LAST)
    return {
        "name": f"{first} {last}", "first": first, "agent": rng.choice(AGENTS),
        "product": rng.choice(PRODUCTS), "order": str(rng.randint(100000, 999999)),
        "date": f"{rng.choice(MONTHS)} {rng.randint(1, 28)}", "days": rng.randint(2, 9),
        "amount": f"{rng.randint(12, 480)}.{rng.choice(['00', '49', '99', '95'])}",
        "plan": rng.choice(PLANS), "city": rng.choice(CITIES),
        "street": f"{rng.randint(2, 98)} {rng.choice(STREETS)}",
    }


# Each intent: (customer/agent turns as templates, summary template). Turns alternate starting with
# the customer; optional small talk is added around them.
INTENTS: dict[str, tuple[list[list[str]], list[str]]] = {
    "late_delivery": ([
        ["Hi, my order {order} has not arrived yet.", "Hello, I'm still waiting for order {order}."],
        ["Sorry to hear that. Could you confirm the item?", "I'm sorry about the delay. What did you order?"],
        ["It's a {product}, ordered on {date}.", "A {product}. I placed the order on {date}."],
        ["The parcel was held at the depot. I've sent a new one; it arrives in {days} days.",
         "I see the courier lost it. A replacement is on its way and should arrive within {days} days."],
    ], ["{name} reports that order {order}, a {product} ordered on {date}, has not arrived. "
        "{agent} sends a replacement that arrives within {days} days.",
        "{name}'s order {order} ({product}, ordered {date}) is late. {agent} ships a replacement, "
        "due in {days} days."]),
    "damaged_item": ([
        ["The {product} I received is broken.", "Hi, my {product} arrived damaged."],
        ["I'm sorry. What is the order number?", "That's not good. Can I have your order number?"],
        ["It's {order}. I paid {amount} euros.", "Order {order}, it cost me {amount} euros."],
        ["I've issued a full refund of {amount} euros to your card.",
         "You will get a refund of {amount} euros within {days} days."],
    ], ["{name} received a damaged {product} from order {order}. {agent} refunds {amount} euros.",
        "The {product} in order {order} arrived broken; {agent} gives {name} a refund of {amount} euros."]),
    "double_charge": ([
        ["I was charged twice for my {plan} plan.", "Hello, there are two charges for my {plan} subscription."],
        ["Let me check. When did you see the charges?", "Sorry about that. Which date were you charged?"],
        ["On {date}, {amount} euros each time.", "Both on {date}, {amount} euros."],
        ["You're right, the second charge of {amount} euros is refunded.",
         "I've reversed the duplicate payment of {amount} euros."],
    ], ["{name} was charged twice for the {plan} plan on {date}. {agent} refunds the extra {amount} euros.",
        "{agent} reverses a duplicate {plan} plan charge of {amount} euros made on {date} for {name}."]),
    "password_reset": ([
        ["I can't log in to my account.", "My account is locked and I can't sign in."],
        ["I can help. Can you confirm the email on the account?", "Sorry! Please confirm your account email."],
        ["It's {first}.{order}@example.com.", "The email is {first}.{order}@example.com."],
        ["I've unlocked the account and sent a reset link, valid for {days} hours.",
         "The account is unlocked. Use the reset link within {days} hours."],
    ], ["{name} could not log in. {agent} unlocks the account and sends a reset link valid for {days} hours.",
        "{agent} unlocks {name}'s account and sends a password reset link that expires in {days} hours."]),
    "address_change": ([
        ["Can I change the delivery address for order {order}?", "I need to update the address on order {order}."],
        ["Sure. What is the new address?", "Of course. Where should it go instead?"],
        ["Please send it to {street}, {city}.", "The new address is {street} in {city}."],
        ["Done, order {order} will now go to {street}, {city}.",
         "Updated. The {product} in order {order} ships to {city}."],
    ], ["{name} asks to change the address of order {order}. {agent} updates it to {street}, {city}.",
        "{agent} changes the delivery address of order {order} to {street}, {city} for {name}."]),
    "cancel_subscription": ([
        ["I want to cancel my {plan} subscription.", "Please cancel my {plan} plan."],
        ["I'm sorry to see you go. May I ask why?", "Okay. Is there a reason you want to cancel?"],
        ["It's too expensive at {amount} euros a month.", "I don't use it enough for {amount} euros."],
        ["Your {plan} plan is cancelled from {date}. No further charges.",
         "Cancelled. The {plan} plan ends on {date}."],
    ], ["{name} cancels the {plan} plan because it costs {amount} euros. {agent} confirms it ends on {date}.",
        "{agent} cancels {name}'s {plan} subscription ({amount} euros a month), effective {date}."]),
    "wrong_item": ([
        ["I received the wrong item in order {order}.", "Order {order} contains something I didn't order."],
        ["Apologies. What did you expect to receive?", "Sorry for the mix-up. What should have been in it?"],
        ["I ordered a {product}.", "It should be a {product}."],
        ["I'm sending the {product} today with a free return label.",
         "A {product} ships today; please return the wrong item with the prepaid label."],
    ], ["{name} got the wrong item in order {order}. {agent} ships the {product} with a free return label.",
        "Order {order} had the wrong item; {agent} sends {name} the {product} and a return label."]),
    "warranty_repair": ([
        ["My {product} stopped working after {days} months.", "Hi, my {product} broke after {days} months."],
        ["It is under warranty. Do you have the order number?", "That's covered by warranty. Order number?"],
        ["Yes, {order}.", "Sure, it's {order}."],
        ["I've booked a free repair; a courier collects it on {date}.",
         "A courier will pick it up on {date} for a free warranty repair."],
    ], ["{name}'s {product} from order {order} broke. {agent} books a free warranty repair with pickup on {date}.",
        "{agent} arranges a warranty repair for {name}'s {product} (order {order}), collected on {date}."]),
}
GREETINGS = ["Hi there!", "Good morning.", "Hello, thanks for reaching out."]
# Every fact in a summary must be readable in the chat: names are introduced here.
CUSTOMER_INTROS = ["Hi, this is {name}. ", "Hello, {name} here. ", "My name is {name}. ", "Hi, I'm {name}. "]
AGENT_INTROS = ["Hi {first}, I'm {agent}. ", "{agent} here. ", "Hello {first}, this is {agent}. "]
CLOSINGS = [["Thanks for your help!", "You're welcome, have a nice day."],
            ["Great, thank you.", "Happy to help. Anything else?"]]


def generate(n: int, seed: int = 7) -> list[dict]:
    """n conversations, identical for the same (n, seed)."""
    rng = random.Random(seed)
    rows = []
    intents = sorted(INTENTS)
    for i in range(n):
        intent = intents[i % len(intents)] if i < len(intents) else rng.choice(intents)
        turns, summaries = INTENTS[intent]
        f = _facts(rng)
        messages = []
        if rng.random() < 0.4:
            messages.append({"role": "agent", "content": rng.choice(GREETINGS)})
        for k, options in enumerate(turns):
            role = "customer" if k % 2 == 0 else "agent"
            text = rng.choice(options)
            if k == 0:
                text = rng.choice(CUSTOMER_INTROS) + text
            elif k == 1:
                text = rng.choice(AGENT_INTROS) + text
            messages.append({"role": role, "content": text.format(**f)})
        if rng.random() < 0.5:
            close = rng.choice(CLOSINGS)
            messages += [{"role": "customer", "content": close[0]}, {"role": "agent", "content": close[1]}]
        rows.append({
            "conversation_id": f"conv-{seed}-{i:06d}",
            "intent": intent,
            "customer": f["name"],
            "messages": messages,
            "summary": rng.choice(summaries).format(**f),
        })
    return rows


def broken_rows(n: int, seed: int = 7) -> list[str]:
    """Raw lines of the kinds real exports contain: what ingest must quarantine, not crash on."""
    rng = random.Random(seed + 1)
    good = generate(n, seed + 1000)
    kinds = [
        lambda r: json.dumps(r)[: rng.randint(20, 80)],  # truncated write
        lambda r: json.dumps({**r, "summary": ""}),  # agent left no summary
        lambda r: json.dumps({**r, "messages": r["messages"][:1]}),  # one-sided, one turn
        lambda r: json.dumps({**r, "messages": [{"role": "moderator", "content": "x"}] + r["messages"]}),
    ]
    return [kinds[i % len(kinds)](row) for i, row in enumerate(good)]


def write_jsonl(rows: list[dict], path: str | Path, broken: list[str] = ()) -> Path:
    """Rows as JSONL; `broken` raw lines are spread through the file at fixed positions."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(row) for row in rows]
    for i, raw in enumerate(broken):
        lines.insert((i * 7919) % (len(lines) + 1), raw)
    with path.open("w") as fh:
        fh.write("\n".join(lines) + "\n")
    return path
