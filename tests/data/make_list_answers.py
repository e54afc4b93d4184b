"""Writes tests/data/list_answers.jsonl: LLM answers in the shapes models write lists in, each with
the items a parser must give back.

Run `python tests/data/make_list_answers.py` from the repository root to rebuild it. The corpus is
committed, so the tests never depend on this script's randomness; it is kept so the corpus can be
grown or checked. The items are real texts:
- descriptors: the GPT-3 descriptors DCLIP published for ImageNet (prompts/imagenet/dclip-published,
  MIT, see prompts/LICENSE-WaffleCLIP.md), 120 classes;
- names: the WordNet lemmas of the same classes, with WordNet glosses as explanations (timm's
  imagenet_synset_to_lemma.txt / _definition.txt);
- pairs: two classes' descriptors as FuDD-style captions ("a photo of a pug, with ...").
The answers are rendered the way models write them: "- " lines and the GPT-3 continuation of the
DCLIP prompt, "1." "1)" "(1)" numbering, "*" and "•" bullets, **bold**, *italic* and `code`, a
lead-in line, a heading, a closing note or summary, blank lines between items, and "Label:
explanation" items; FuDD answers as JSON with fences, prose around it and markup inside.
Each record: {"parser", "shapes", "answer", "items", "class", ...}; for "pair" records "pair" and
"attributes" ([attribute, first, second]).
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import timm

ROOT = Path(__file__).resolve().parents[2]
OUT = Path(__file__).resolve().parent / "list_answers.jsonl"
SEED = 20261203

MARKERS = {
    "dash": lambda i: "- ",
    "star": lambda i: "* ",
    "bullet": lambda i: "• ",
    "numbered-dot": lambda i: f"{i}. ",
    "numbered-paren": lambda i: f"{i}) ",
    "numbered-parens": lambda i: f"({i}) ",
}
LEAD_INS = [
    "Here are some features of {a} {c}:",
    "Sure! Here are the visual features that help identify {a} {c} in a photo:",
    "There are several useful visual features to tell there is {a} {c} in a photo:",
    "Certainly. Useful visual features for distinguishing {a} {c} include:",
    "To identify {a} {c} in a photo, look for:",
    "Visual features of {a} {c}:",
    "Of course! When trying to spot {a} {c}, keep an eye out for the following:",
    "Here's what to look for:",
]
HEADINGS = [
    "### Visual features of {a} {c}",
    "**Visual features of {a} {c}**",
    "## {C}",
    "# Distinguishing features",
    "**Key features:**",
    "Key visual features:",
    "__{C}__",
]
CLOSINGS = [
    "These features together make {a} {c} easy to recognise in a photo.",
    "Note: coloration and size can vary between individuals.",
    "In summary, look for the combination of these traits.",
    "Let me know if you need more details!",
    "Overall, the combination of these features is distinctive.",
    "*These are general guidelines; individual photos may vary.*",
    "I hope this helps you identify {a} {c}!",
    "By looking for these characteristics, you should be able to spot {a} {c} easily.",
]
NAME_LEAD_INS = [
    "Here are some common ways of referring to {a} {c}:",
    "Sure! Common names for {a} {c} include:",
    "{A} {c} is also known as:",
    "Certainly, here is a numbered list:",
    "Common ways to refer to {a} {c}:",
]
NAME_HEADINGS = ["### Common names for {a} {c}", "**Names:**", "## Names", "**{C}**"]
NAME_CLOSINGS = [
    "These names are often used interchangeably.",
    "Note: some of these terms are regional.",
    "I hope this helps!",
    "Let me know if you need more names.",
    "The most common of these is the first one.",
]
PAIR_LEAD_INS = ["Here are the visual differences between {c1} and {c2}:",
                 "Sure! Below is the JSON you asked for:", "Certainly.", "Here is the JSON object:"]
PAIR_CLOSINGS = ["These attributes should help tell the two apart.", "Let me know if you need more attributes!",
                 "Note: individual animals and objects may vary."]
LABELS = [
    (r"\b(black|white|brown|gr[ae]y|red|blue|green|yellow|orange|pink|purple|colou?r|golden|silver|tan)\b", "Color"),
    (r"\b(spot|stripe|striped|spotted|pattern|marking)", "Pattern"),
    (r"\b(tail)\b", "Tail"), (r"\b(ears?)\b", "Ears"), (r"\b(eyes?)\b", "Eyes"), (r"\b(legs?|feet|paws?)\b", "Legs"),
    (r"\b(fur|hair|coat|feathers?|scales?)\b", "Coat"), (r"\b(wings?)\b", "Wings"), (r"\b(head|face|snout)\b", "Head"),
    (r"\b(small|large|big|long|short|tall|size)\b", "Size"), (r"\b(shape|shaped|round|rectangular)\b", "Shape"),
]


def article(name: str) -> str:
    return "an" if name[:1].lower() in "aeiou" else "a"


def label_for(text: str, rng: random.Random) -> str:
    for pattern, label in LABELS:
        if re.search(pattern, text, re.IGNORECASE):
            return label
    return rng.choice(["Feature", "Appearance", "Detail", "Distinctive trait"])


def fill(template: str, name: str) -> str:
    a = article(name)
    return template.format(a=a, A=a.capitalize(), c=name, C=name.title())


def emphasise(text: str, style: str) -> str:
    return {"bold": f"**{text}**", "italic": f"*{text}*", "italic-underscore": f"_{text}_", "code": f"`{text}`"}[style]


def render_items(items: list[str], marker: str, rng: random.Random, *, markup: str | None, labels: bool,
                 blank_lines: bool) -> tuple[list[str], list[str]]:
    """Lines of the list and the items as a parser must give them back."""
    lines, expected = [], []
    for i, item in enumerate(items, 1):
        shown, want = item, item
        if labels:
            label = label_for(item, rng)
            form = rng.choice(["bold-colon-in", "bold-colon-out", "plain", "next-line"])
            want = f"{label}: {item}"
            if form == "bold-colon-in":
                shown = f"**{label}:** {item}"
            elif form == "bold-colon-out":
                shown = f"**{label}**: {item}"
            elif form == "plain":
                shown = f"{label}: {item}"
            else:  # the label on the item line, its explanation indented below
                shown = f"**{label}**\n{' ' * len(MARKERS[marker](i))}{item}"
        elif markup and (markup != "bold" or rng.random() < 0.8):
            shown = emphasise(item, markup)
        lines.append(MARKERS[marker](i) + shown)
        expected.append(want)
        if blank_lines and i < len(items):
            lines.append("")
    return lines, expected


def dclip_descriptors() -> dict[str, list[str]]:
    """Class name -> DCLIP's published ImageNet descriptors, in label order."""
    by_class: dict[str, list[str]] = {}
    for line in (ROOT / "prompts/imagenet/dclip-published/v1.jsonl").open():
        record = json.loads(line)
        by_class.setdefault(record["class_name"], []).append(record["text"])
    return by_class


def descriptor_answers(rng: random.Random) -> list[dict]:
    by_class = dclip_descriptors()
    classes = sorted(rng.sample(sorted(by_class), 120))
    answers = []
    plan = []
    for marker in MARKERS:  # every marker plain, and with each frame
        plan += [(marker, None, set()), (marker, None, {"lead-in"}), (marker, None, {"closing"}),
                 (marker, None, {"heading"}), (marker, None, {"blank-lines"})]
    for markup in ("bold", "italic", "italic-underscore", "code"):
        for marker in MARKERS:
            plan.append((marker, markup, set()))
    for marker in MARKERS:
        plan += [(marker, None, {"label"}), (marker, None, {"label", "lead-in"})]
    for _ in range(40):  # chat answers with several shapes at once
        frames = {f for f in ("lead-in", "heading", "closing", "blank-lines") if rng.random() < 0.5}
        markup = rng.choice([None, "bold", "italic", "code"]) if rng.random() < 0.5 else None
        plan.append((rng.choice(list(MARKERS)), markup, frames | ({"label"} if rng.random() < 0.3 else set())))
    plan += [("gpt3-continuation", None, set())] * 16 + [("gpt3-continuation", None, {"next-question"})] * 8
    for index, (marker, markup, frames) in enumerate(plan):
        name = classes[index % len(classes)]
        items = by_class[name]
        if marker == "gpt3-continuation":
            lines = [rng.choice(["", " "]) + items[0]] + [f"- {item}" for item in items[1:]]
            if "next-question" in frames:
                other = classes[(index + 7) % len(classes)]
                lines += ["", f"Q: What are useful features for distinguishing {article(other)} {other} in a photo?",
                          f"A: There are several useful visual features to tell there is {article(other)} {other} "
                          "in a photo:"] + [f"- {item}" for item in by_class[other][:3]]
            answers.append({"parser": "bullets", "continues_bullet": True, "class": name,
                            "shapes": ["gpt3-continuation"] + sorted(frames), "answer": "\n".join(lines),
                            "items": items})
            continue
        lines, expected = render_items(items, marker, rng, markup=markup, labels="label" in frames,
                                       blank_lines="blank-lines" in frames)
        if "heading" in frames:
            lines = [fill(rng.choice(HEADINGS), name), ""] + lines
        if "lead-in" in frames:
            lines = [fill(rng.choice(LEAD_INS), name), ""] + lines
        if "closing" in frames:
            lines += ["", fill(rng.choice(CLOSINGS), name)]
        shapes = [marker] + ([markup.replace("-underscore", "")] if markup else []) + sorted(frames)
        answers.append({"parser": "bullets", "continues_bullet": True, "class": name, "shapes": shapes,
                        "answer": "\n".join(lines), "items": expected})
    for index in range(12):  # all prose: no list, nothing to keep
        name = classes[-1 - index]
        items = by_class[name]
        prose = (f"{article(name).capitalize()} {name} can be recognised by its {items[0]} and {items[-1]}. "
                 f"Look for {items[1 % len(items)]} as well.")
        if index % 3 == 1:
            prose = f"Sure! {prose}\n\nIn most photos it is {items[0]}."
        if index % 3 == 2:
            prose = "\n".join(f"{article(name).capitalize()} {name} has {item}." for item in items[:3])
        answers.append({"parser": "bullets", "continues_bullet": True, "class": name, "shapes": ["all-prose"],
                        "answer": prose, "items": []})
    return answers


def name_answers(rng: random.Random) -> list[dict]:
    info = Path(timm.__file__).parent / "data" / "_info"
    lemmas = dict(line.rstrip("\n").split("\t", 1) for line in (info / "imagenet_synset_to_lemma.txt").open())
    glosses = dict(line.rstrip("\n").split("\t", 1) for line in (info / "imagenet_synset_to_definition.txt").open())
    wnids = [line.strip() for line in (info / "imagenet_synsets.txt").open()]
    several = [w for w in wnids if len(lemmas[w].split(", ")) >= 2]
    chosen = sorted(rng.sample(several, 120))
    plan = []
    for marker in MARKERS:
        plan += [(marker, None, set()), (marker, None, {"lead-in"}), (marker, None, {"closing"}),
                 (marker, None, {"heading"}), (marker, None, {"blank-lines"}), (marker, None, {"label"})]
    for markup in ("bold", "italic", "code"):
        for marker in MARKERS:
            plan.append((marker, markup, set()))
    for _ in range(30):
        frames = {f for f in ("lead-in", "heading", "closing", "blank-lines", "label") if rng.random() < 0.4}
        plan.append((rng.choice(list(MARKERS)), rng.choice([None, "bold", "italic"]), frames))
    answers = []
    for index, (marker, markup, frames) in enumerate(plan):
        wnid = chosen[index % len(chosen)]
        names = lemmas[wnid].split(", ")
        name = names[0]
        lines, expected = [], []
        for i, item in enumerate(names, 1):
            shown = emphasise(item, markup) if markup else item
            scientific = re.fullmatch(r"[A-Z][a-z]+ [a-z]+", item) and i > 1
            if scientific and rng.random() < 0.5:
                shown = f"Scientific name: {shown}"
            elif "label" in frames:
                gloss = glosses[wnid]
                shown = rng.choice([f"{shown}: {gloss}", f"**{item}** - {gloss}", f"{shown} – {gloss}"])
            lines.append(MARKERS[marker](i) + shown)
            if "blank-lines" in frames and i < len(names):
                lines.append("")
            if item.casefold() not in {e.casefold() for e in expected}:
                expected.append(item)
        if "heading" in frames:
            lines = [fill(rng.choice(NAME_HEADINGS), name), ""] + lines
        if "lead-in" in frames:
            lines = [fill(rng.choice(NAME_LEAD_INS), name)] + ([""] if rng.random() < 0.5 else []) + lines
        if "closing" in frames:
            lines += ["", fill(rng.choice(NAME_CLOSINGS), name)]
        answers.append({"parser": "list", "class": name, "shapes": [marker] + ([markup] if markup else [])
                        + sorted(frames), "answer": "\n".join(lines), "items": expected})
    return answers


def pair_answers(rng: random.Random) -> list[dict]:
    by_class = dclip_descriptors()
    names = list(by_class)
    pairs = []
    while len(pairs) < 60:
        first = rng.randrange(len(names) - 1)
        c1, c2 = names[first], names[first + 1]  # neighbours in ImageNet's order are often confusable
        w1, w2 = set(c1.lower().split()), set(c2.lower().split())
        if w1 & w2 or (c1, c2) in pairs:
            continue
        pairs.append((c1, c2))
    shapes_plan = [["plain"], ["pretty"], ["fenced"], ["lead-in", "fenced"], ["fenced", "closing"],
                   ["lead-in", "pretty", "closing"], ["blank-lines"], ["bold"], ["heading", "fenced"],
                   ["fudd-format"]]
    answers = []
    for index, (c1, c2) in enumerate(pairs):
        shapes = shapes_plan[index % len(shapes_plan)]
        n = min(len(by_class[c1]), len(by_class[c2]), rng.randint(3, 5))
        attributes = []
        for d1, d2 in zip(by_class[c1][:n], by_class[c2][:n]):
            if d1.lower() in c2.lower() or d2.lower() in c1.lower() or d1 == d2:
                continue
            attributes.append([label_for(d1, rng).lower(), f"a photo of {article(c1)} {c1}, with {d1}",
                               f"a photo of {article(c2)} {c2}, with {d2}"])
        if "bold" in shapes:
            shown = [[f"**{a}**", f"a photo of {article(c1)} {c1}, with **{s1.split(', with ', 1)[1]}**",
                      f"a photo of {article(c2)} {c2}, with *{s2.split(', with ', 1)[1]}*"]
                     for a, s1, s2 in attributes]
        else:
            shown = attributes
        if "fudd-format" in shapes:
            body = json.dumps({"prompt_pairs": [{"attribute": a, "prompt_pair": [s1, s2]} for a, s1, s2 in shown]},
                              indent=2)
        else:
            value = {"differences": [{"attribute": a, "object_1": s1, "object_2": s2} for a, s1, s2 in shown]}
            body = json.dumps(value) if "plain" in shapes or "bold" in shapes else json.dumps(value, indent=2)
            if "blank-lines" in shapes:
                body = body.replace("},\n", "},\n\n")
        if "fenced" in shapes:
            body = f"```json\n{body}\n```"
        if "heading" in shapes:
            body = f"### Differences between {c1} and {c2}\n\n{body}"
        if "lead-in" in shapes:
            body = rng.choice(PAIR_LEAD_INS).format(c1=c1, c2=c2) + "\n\n" + body
        if "closing" in shapes:
            body += "\n\n" + rng.choice(PAIR_CLOSINGS)
        answers.append({"parser": "pair", "pair": [c1, c2], "shapes": shapes, "answer": body,
                        "attributes": attributes})
    return answers


def main() -> None:
    rng = random.Random(SEED)
    answers = descriptor_answers(rng) + name_answers(rng) + pair_answers(rng)
    with OUT.open("w", encoding="utf-8") as handle:
        for answer in answers:
            handle.write(json.dumps(answer, ensure_ascii=False) + "\n")
    print(f"wrote {len(answers)} answers to {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
