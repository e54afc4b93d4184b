"""How often `promptgen rename` picks the name REAL picked from LAION caption counts (issue 16).

    .venv/bin/python benchmarks/rename_agreement.py --real-metrics PATH [--real-metrics PATH2] [--step 0.25]

PATH is REAL's `analysis/laion/imagenet_1k/metrics-<corpus>.json` (shubhamprshr27/NeglectedTailsVLM;
no licence, so it is read where it lies and never copied into this repository). REAL's choice for
class c is the file's `most_common_name` of key "c", the name REAL's head prompts with
(utils/prompt_templates.py:255). Per corpus (the part of the file name after "metrics-"):

(a) keeping the official names of our ImageNet class list;
(b) the frequency scorer (wordfreq) over the WordNet lemmas of our class list (what `promptgen
    synonyms imagenet --source wordnet` writes), with rename's default filters (ambiguous,subset)
    and with the real head's (subset), at margins 0, step, 2 step, ... up to the first margin at
    which it renames no class;
(c) the counts scorer over the file's own counts, imported as a counts set (`promptgen import
    --format real-metrics`) for a class list with REAL's official names, chosen as `rename --counts`
    chooses (scorer counts, filter subset, margin 0).

Classes are compared by label index, names ignoring case (CLIP's tokenizer lower-cases, and REAL's
most_common_name is often the lower-cased official name). Agreement is given over all classes and
over the classes whose REAL name is among the WordNet candidates of our class list (the only ones
(b) can agree on other than by keeping the official name). REAL's official names differ from ours
for 18 ImageNet classes in the LAION-400M file ("red eft" for "newt", ...) and 4 in the LAION-2B one,
and both files name two pairs of classes alike ("missile" at 657 and 744, "sunglasses" at 836 and
837); a class list needs distinct names, so (c)'s list
capitalises the one of each pair that our list names otherwise ("Missile" at 744, "Sunglasses" at
836): a spelling CLIP's tokenizer and REAL's rule (which lower-cases the words it compares, and
whose counts are looked up by the file's own name) treat as the same. For (c) the script also runs
REAL's find_most_common_name (laion_parser.py L218-255, re-implemented here, with the KeyError on
an official name absent from `alternates` read as a count of 0) and counts the classes where
`rename --counts` gives its name, and lists (by label index) the classes whose published
most_common_name that code does not give.

Prints a table and writes benchmarks/results/rename_agreement.json (aggregates and label indices
only: no names from REAL's file).
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import platform
import re
import sys
import tempfile
from importlib import metadata
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from promptgen.classes import ClassList, load_dataset, loose_name  # noqa: E402
from promptgen.formats.real_metrics import import_real_metrics, same_name  # noqa: E402
from promptgen.name_counts import load_counts_set  # noqa: E402
from promptgen.rename import choose_names, counted_candidates  # noqa: E402
from promptgen.stages.synonyms import load_candidates, synonyms_wordnet  # noqa: E402
from promptgen.store import Store  # noqa: E402

CHECKOUT = Path(__file__).resolve().parent.parent
FILTER_SETS = {"ambiguous,subset": ("ambiguous", "subset"), "subset": ("subset",)}


# -- REAL's code, re-implemented independently of promptgen.rename ------------------------------------

def real_clean_text(text: str) -> str:
    """laion_parser.py L215-216."""
    return text.strip().replace("'", "").replace('"', "").replace("-", " ").replace("_", " ").replace("  ", " ").lower()


def real_find_most_common_name(official: str, alternates: dict[str, int]) -> str:
    """laion_parser.py L218-255, RELAXED; `official` is metrics['name'] (the published function reads
    an unassigned variable); a KeyError on the official name's count is read as 0."""
    ordered = dict(sorted(alternates.items(), key=lambda item: item[1], reverse=True))
    best, best_count = official, ordered.get(official, ordered.get(real_clean_text(official), 0))
    official_words = set(re.sub(r"[^\w\s]", "", real_clean_text(official)).split())
    for name, count in ordered.items():
        words = set(re.sub(r"[^\w\s]", "", real_clean_text(name)).split())
        if best_count < count:
            if words == official_words or not words.issubset(official_words):
                best = name
            best_count = count
    return best


# -- the measurement ----------------------------------------------------------------------------------

def agreement(chosen: list[str], published: list[str], among: list[int]) -> dict:
    agree = [c for c in range(len(published)) if same_name(chosen[c], published[c])]
    among_set = set(among)
    return {"agree_all": len(agree), "agree_among": sum(1 for c in agree if c in among_set)}


def real_names_class_list(entries: list[dict], ours: ClassList, dataset: str) -> ClassList:
    """REAL's official names, made distinct where REAL repeats one: the class our list names
    otherwise gets a capitalised spelling (see the module docstring)."""
    names = [e["name"] for e in entries]
    for c, name in enumerate(names):
        if names.count(name) > 1 and loose_name(name) != loose_name(ours.names[c]):
            spelling = next((s for s in (name.capitalize(), name.title(), name.upper()) if s not in names), None)
            if spelling is None:
                raise SystemExit(f"cannot make class {c}'s name {name!r} distinct")
            names[c] = spelling
    return ClassList(dataset=dataset, names=tuple(names), source="REAL's official names (benchmark)")


def counts_choice(store: Store, path: Path, entries: list[dict], ours: ClassList, corpus: str, work: Path
                  ) -> tuple[list[str], dict]:
    """(c): the file imported as a counts set of a class list with REAL's names, chosen as `rename
    --counts` chooses; and how that compares with REAL's code on the same file."""
    real_classes = real_names_class_list(entries, ours, f"imagenet-real-{corpus.lower()}")
    class_file = work / f"{real_classes.dataset}.txt"
    class_file.write_text("\n".join(real_classes.names) + "\n", encoding="utf-8")
    classes = store.classes(real_classes.dataset, class_file)
    info, section = import_real_metrics(store, classes, path)
    counted, _ = load_counts_set(store, f"{info.set}@v{info.version}", classes)
    candidates, lookup = counted_candidates(classes, counted)
    chosen = choose_names(classes, candidates, "counts", filters=("subset",), margin=0.0, counts=lookup).chosen
    code = [real_find_most_common_name(e["name"], e["alternates"]) for e in entries]
    published = [e["most_common_name"] for e in entries]
    check = {"equals_reals_code": sum(same_name(a, b) for a, b in zip(chosen, code)),
             "reals_code_gives_published": sum(same_name(a, b) for a, b in zip(code, published)),
             "published_not_given_by_reals_code": [c for c in range(len(entries)) if not same_name(code[c], published[c])],
             "import_reproduced": section["real_rule"]["reproduced"],
             "renamed_classes": [c for c in range(len(entries)) if chosen[c] != classes.names[c]],
             "class_names_changed_for_distinctness": [c for c in range(len(entries))
                                                      if classes.names[c] != entries[c]["name"]]}
    check["renamed"] = len(check.pop("renamed_classes"))
    return chosen, check


def read_metrics(path: Path, classes: ClassList) -> list[dict]:
    data = json.loads(path.read_text(encoding="utf-8"))
    if sorted(map(int, data)) != list(range(len(classes))):
        raise SystemExit(f"{path}: not {len(classes)} classes keyed 0..{len(classes) - 1}")
    return [data[str(c)] for c in range(len(classes))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--real-metrics", action="append", type=Path, required=True,
                        help="REAL's analysis/laion/imagenet_1k/metrics-CORPUS.json (repeat for another corpus)")
    parser.add_argument("--step", type=float, default=0.25, help="margin step of the frequency sweep")
    parser.add_argument("--out", type=Path, default=CHECKOUT / "benchmarks" / "results" / "rename_agreement.json")
    args = parser.parse_args()

    ours = load_dataset("imagenet")
    with tempfile.TemporaryDirectory(prefix="rename-agreement-") as tmp:
        work = Path(tmp)
        store = Store(work / "root")
        synonyms_wordnet(ours, store)  # `promptgen synonyms imagenet --source wordnet`
        candidates, _ = load_candidates(store, "synonyms", ours)

        # (b) does not depend on the corpus: the choices per filter set and margin, once
        sweeps: dict[str, list[tuple[float, list[str], int]]] = {}
        for label, filters in FILTER_SETS.items():
            sweeps[label] = []
            step = 0
            while True:
                margin = round(step * args.step, 6)
                result = choose_names(ours, candidates, "frequency", filters=filters, margin=margin)
                sweeps[label].append((margin, result.chosen, len(result.renamed)))
                if not result.renamed:
                    break
                step += 1

        corpora = {}
        for path in args.real_metrics:
            corpus = path.stem.split("metrics-", 1)[-1]
            entries = read_metrics(path, ours)
            published = [e["most_common_name"] for e in entries]
            among = [c for c in range(len(ours)) if any(same_name(k.name, published[c]) for k in candidates[c])]
            rows = [{"method": "official names", "filters": None, "margin": None, "renamed": 0,
                     **agreement(list(ours.names), published, among)}]
            for label, sweep in sweeps.items():
                rows += [{"method": "frequency", "filters": label, "margin": margin, "renamed": renamed,
                          **agreement(chosen, published, among)} for margin, chosen, renamed in sweep]
            chosen, check = counts_choice(store, path, entries, ours, corpus, work)
            rows.append({"method": "counts (REAL's counts imported)", "filters": "subset", "margin": 0.0,
                         "renamed": check["renamed"], **agreement(chosen, published, among)})
            corpora[corpus] = {"file": path.name, "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                               "classes": len(ours), "real_name_among_wordnet_candidates": len(among),
                               "official_names_differ_from_ours": sum(
                                   loose_name(e["name"]) != loose_name(n) for e, n in zip(entries, ours.names)),
                               "rows": rows, "counts_check": check}

    # the smallest margin of the sweep at which the frequency scorer agrees at least as often as the
    # official names, on every corpus and over both denominators
    safe = {}
    for label, sweep in sweeps.items():
        for margin, _, _ in sweep:
            ok = True
            for corpus in corpora.values():
                baseline = corpus["rows"][0]
                row = next(r for r in corpus["rows"] if r["filters"] == label and r["margin"] == margin)
                ok &= row["agree_all"] >= baseline["agree_all"] and row["agree_among"] >= baseline["agree_among"]
            if ok:
                safe[label] = margin
                break

    names = list(corpora)
    header = "| method | filters | margin | renamed | " + " | ".join(
        f"{n} all ({corpora[n]['classes']}) | {n} REAL name among candidates ({corpora[n]['real_name_among_wordnet_candidates']})"
        for n in names) + " |"
    print(header)
    print("|" + "---|" * (4 + 2 * len(names)))
    for i, row in enumerate(corpora[names[0]]["rows"]):
        cells = [row["method"], row["filters"] or "-", "-" if row["margin"] is None else f"{row['margin']:g}",
                 str(row["renamed"]) if row["method"] != "counts (REAL's counts imported)" else
                 "/".join(str(corpora[n]["rows"][i]["renamed"]) for n in names)]
        for n in names:
            other, corpus = corpora[n]["rows"][i], corpora[n]
            cells.append(f"{other['agree_all'] / corpus['classes']:.1%}")
            cells.append(f"{other['agree_among'] / corpus['real_name_among_wordnet_candidates']:.1%}")
        print("| " + " | ".join(cells) + " |")
    for n in names:
        check = corpora[n]["counts_check"]
        print(f"{n}: rename --counts gives REAL's code's name for {check['equals_reals_code']}/{corpora[n]['classes']} "
              f"classes; REAL's code gives the published most_common_name for {check['reals_code_gives_published']}; "
              f"not for labels {check['published_not_given_by_reals_code']}")
    print("smallest margin at which frequency agrees at least as often as the official names on every corpus: "
          + ", ".join(f"{label}: {margin if margin is not None else 'none'}" for label, margin in
                      ((label, safe.get(label)) for label in FILTER_SETS)))
    report = {"date": datetime.date.today().isoformat(), "python": platform.python_version(),
              "wordfreq": metadata.version("wordfreq"), "dataset": "imagenet", "step": args.step,
              "compared": "by label index, ignoring case", "corpora": corpora,
              "smallest_margin_at_least_official": safe}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
