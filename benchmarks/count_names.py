"""`promptgen count-names` (issue 16): the counting engines against REAL's SQLite FTS5 approach, in one run.

    .venv/bin/python benchmarks/count_names.py [--captions 10000000] [--baseline-captions N]
        [--corpus /tmp/wtbench_corpus] [--engines fts5,python,embedded-1,embedded,spark]

Corpus: LAION-like parquet shards (column TEXT, several row groups each) written with a fixed seed
under --corpus (never in the repository; reused when its parameters match). Filler words are
random letter strings checked against every token of every name, so a name can only be found where
it was planted, and the count every name must get is computed independently of the engines: for
each planted name (or pair of names in one caption), which names' token sequences occur in it,
times how often it was planted ("hot dog" also counts for "dog").

Names: every ImageNet candidate name (the official names and the lemmas of their WordNet synsets)
plus LLM-style variants made by string transforms (plurals, "the X", hyphens, British spellings,
"X (bird)", "X sp.", "A / B", curly apostrophes, "&" for "and", an accent here and there).

Engines, each in its own process (peak RSS of the whole process tree, sampled, and the largest
single process from wait4), on the same corpus and names:
  fts5        REAL's approach (analysis/laion/laion_parser.py), restated: captions with quotes
              removed and '-', '_' as spaces inserted into an FTS5 table (executemany), then one
              MATCH query per name as REAL writes it (words joined by ' + ', quoted when the name
              has parentheses, dots or slashes, parentheses dropped; SELECT rowid, text ... ORDER BY
              RANK), counting the rows; one core. A count(*) query per name is timed apart: what a
              new name list would cost on a kept index (not REAL's code)
  python      a hand-written loop on one core: per caption, `re` normalisation, then every token
              n-gram of the caption (of the lengths names have) looked up in a dict of the names
  embedded-1  promptgen's embedded engine (run_embedded) with 1 worker: per-core throughput
  embedded    run_embedded with os.cpu_count() workers
  spark       run_spark on local[cpu_count]
--baseline-captions times fts5 and python on a prefix of the corpus (captions/s is what is
compared; their counts are checked against the prefix's expected counts). Prints the tables and
writes benchmarks/results/count_names.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import threading
import time
import unicodedata
from collections import defaultdict
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parent.parent
RESULTS = CHECKOUT / "benchmarks" / "results" / "count_names.json"
CORPUS_VERSION = 2
LAION = {"LAION-400M": 400_000_000, "LAION-2B-en": 2_320_000_000}
ENGINES = ("fts5", "python", "embedded-1", "embedded", "spark")


# -- names ---------------------------------------------------------------------------------------------

_BRITISH = [("color", "colour"), ("gray", "grey"), ("center", "centre"), ("theater", "theatre"),
            ("aluminum", "aluminium"), ("jewelry", "jewellery"), ("mustache", "moustache"), ("tire", "tyre"),
            ("plow", "plough"), ("yogurt", "yoghurt"), ("catalog", "catalogue"), ("armor", "armour"),
            ("ize", "ise"), ("pajama", "pyjama"), ("aesthetic", "esthetic")]
_QUALIFIERS = ["animal", "bird", "dog breed", "fish", "food", "tool", "device", "plant", "insect", "vehicle"]


def imagenet_names() -> list[list[str]]:
    """Per ImageNet class: its official name, then the lemmas of its WordNet synset."""
    from promptgen.classes import load_dataset
    from promptgen.sources.wordnet import load_wordnet

    classes = load_dataset("imagenet")
    per_class = [[name] for name in classes.names]
    for match in load_wordnet().match(classes):
        if match.synset is not None:
            per_class[match.class_index] += list(match.synset.lemmas)
    return [list(dict.fromkeys(names)) for names in per_class]


def all_names(seed: int) -> tuple[list[str], int]:
    """Every candidate name (distinct strings, first-seen order) and how many came from WordNet."""
    import random

    rng = random.Random(seed)
    per_class = imagenet_names()
    base = list(dict.fromkeys(n for names in per_class for n in names))
    out = dict.fromkeys(base)
    for names in per_class:
        for name in names:
            variants = []
            head, paren, tail = name.partition(" (")  # "kites (bird of prey)", as an LLM writes it
            if not head.endswith("s"):
                variants.append(head + "s" + paren + tail)
            if rng.random() < 0.25:
                variants.append("the " + name)
            if " " in name and rng.random() < 0.3:
                variants.append(name.replace(" ", "-"))
            for us, uk in _BRITISH:
                if us in name:
                    variants.append(name.replace(us, uk))
            if rng.random() < 0.08:
                variants.append(f"{name} ({rng.choice(_QUALIFIERS)})")
            if " " not in name and rng.random() < 0.04:
                variants.append(f"{name} sp.")
            if name.lower().startswith("saint "):
                variants.append("St. " + name[6:])
            if "'" in name:
                variants += [name.replace("'", "\u2019"), name.replace("'", "")]
            if " and " in name or "-and-" in name:
                variants.append(name.replace("-and-", " & ").replace(" and ", " & "))
            if "e" in name and rng.random() < 0.01:
                at = name.rindex("e")
                variants.append(name[:at] + "\u00e9" + name[at + 1:])
            if rng.random() < 0.05:
                variants.append(name.title())
            out.update(dict.fromkeys(variants))
        if len(names) >= 2:
            if rng.random() < 0.1:
                out[f"{names[0]} / {names[1]}"] = None
            if rng.random() < 0.05:
                out[f"{names[0]}/{names[1]}"] = None
    names = [n for n in out if expected_tokens(n)]
    return names, len(base)


def expected_tokens(text: str) -> tuple[str, ...]:
    """REAL's matching rule, written out for the expected counts (not the engines' code): quotes
    dropped, diacritics dropped, case folded, every run of characters other than letters and
    digits a separator."""
    text = text.replace("'", "").replace('"', "")
    text = "".join(ch for ch in unicodedata.normalize("NFKD", text) if not unicodedata.combining(ch))
    out, word = [], []
    for ch in text.lower():
        if ch.isalnum():
            word.append(ch)
        elif word:
            out.append("".join(word))
            word = []
    if word:
        out.append("".join(word))
    return tuple(out)


def match_sets(names: list[str]) -> list[frozenset[int]]:
    """For each name, the names whose token sequence occurs (consecutively) in its own."""
    tokens = [expected_tokens(n) for n in names]
    by_tokens: dict[tuple[str, ...], list[int]] = defaultdict(list)
    for i, toks in enumerate(tokens):
        by_tokens[toks].append(i)
    sets = []
    for toks in tokens:
        found: set[int] = set()
        for length in range(1, len(toks) + 1):
            for start in range(len(toks) - length + 1):
                found.update(by_tokens.get(toks[start:start + length], ()))
        sets.append(frozenset(found))
    return sets


# -- corpus --------------------------------------------------------------------------------------------

FORMS = ("plain", "title", "upper", "hyphen", "paren", "comma", "quoted", "hashtag")
FORM_P = (0.55, 0.15, 0.05, 0.10, 0.05, 0.05, 0.03, 0.02)


def render(name: str, form: str) -> str:
    """A planted mention as a caption writes it; the form never changes the name's tokens."""
    if form == "title":
        return name.title()
    if form == "upper":
        return name.upper()
    if form == "hyphen":
        return name.replace(" ", "-")
    if form == "paren":
        return f"({name})"
    if form == "comma":
        return f"{name},"
    if form == "quoted":
        return f'"{name}"'
    if form == "hashtag":
        return "#" + name
    return name


def filler_vocabulary(name_tokens: set[str], seed: int, size: int) -> list[str]:
    """`size` distinct filler words: random letter strings (some capitalised or with punctuation,
    some numbers, a few bare separators); none normalises to a token of any name. Drawn with
    Zipf-like weights by rank, so a few are frequent and most are rare, as in web text."""
    import numpy as np

    rng = np.random.default_rng([seed, 1])
    vocab: list[str] = ["-", "|", "/", ":", "&", "...", "\u2013"]
    seen = set(vocab)
    while len(vocab) < size:
        n = 2 * (size - len(vocab)) + 1000
        lengths = rng.integers(3, 11, n).tolist()
        letters = rng.integers(97, 123, (n, 10), dtype=np.uint8)
        rolls = rng.random(n).tolist()
        numbers = rng.integers(1, 5000, n).tolist()
        for row, length, roll, number in zip(letters, lengths, rolls, numbers):
            word = row[:length].tobytes().decode()
            if roll < 0.70:
                entry = word
            elif roll < 0.85:
                entry = word.capitalize()
            elif roll < 0.88:
                entry = word.upper()
            elif roll < 0.92:
                entry = word + ","
            elif roll < 0.94:
                entry = word + "."
            elif roll < 0.96:
                entry = f"({word})"
            elif roll < 0.98:
                entry = word + "'s"
            else:
                entry = f"{number}{word[:2]}" if roll < 0.99 else str(number)
            if entry in seen or any(t in name_tokens for t in expected_tokens(entry)):
                continue
            seen.add(entry)
            vocab.append(entry)
            if len(vocab) == size:
                break
    return vocab


def zipf_counts(n: int, budget: int, s: float = 1.6) -> "list[int]":
    """n counts, max(1, floor(top / rank^s)), top chosen so that they sum to about `budget`."""
    import numpy as np

    if n > budget:
        raise SystemExit(f"{n} names need at least {n} planted mentions; give more --captions")
    ranks = np.arange(1, n + 1, dtype=np.float64) ** -s
    lo, hi = 1.0, float(budget)
    for _ in range(100):
        top = (lo + hi) / 2
        if np.maximum(1, np.floor(top * ranks)).sum() > budget:
            hi = top
        else:
            lo = top
    return np.maximum(1, np.floor(lo * ranks)).astype(np.int64)


def plan_planting(names: list[str], captions: int, seed: int) -> dict:
    """Which captions get which names: Zipf-like counts per name (every name at least once,
    randomly assigned), about 24 % of captions with a name, 6 % of those with two."""
    import numpy as np

    rng = np.random.default_rng([seed, 2])
    counts = zipf_counts(len(names), int(0.24 * captions))
    counts = counts[rng.permutation(len(names))]
    occurrences = np.repeat(np.arange(len(names), dtype=np.int32), counts)
    rng.shuffle(occurrences)
    pairs = int(0.06 * len(occurrences) / 1.06)
    singles = len(occurrences) - 2 * pairs
    slots = rng.choice(captions, singles + pairs, replace=False).astype(np.int64)
    return {"single_caption": slots[:singles], "single_name": occurrences[:singles],
            "pair_caption": slots[singles:], "pair_a": occurrences[singles::2][:pairs],
            "pair_b": occurrences[singles + 1::2][:pairs], "planted": counts}


def expected_counts(plan: dict, sets: list[frozenset[int]], limit: int) -> list[int]:
    """Per name, the captions among the first `limit` that must count for it."""
    import numpy as np

    expected = np.zeros(len(sets), dtype=np.int64)
    keep = plan["single_caption"] < limit
    per_name = np.bincount(plan["single_name"][keep], minlength=len(sets))
    for i in np.flatnonzero(per_name):
        for j in sets[i]:
            expected[j] += per_name[i]
    keep = plan["pair_caption"] < limit
    pair_keys = plan["pair_a"][keep].astype(np.int64) * len(sets) + plan["pair_b"][keep]
    keys, times = np.unique(pair_keys, return_counts=True)
    for key, n in zip(keys.tolist(), times.tolist()):
        for j in sets[key // len(sets)] | sets[key % len(sets)]:
            expected[j] += n
    return expected.tolist()


_WRITER: dict = {}


def _start_writer(vocab: list[str], names: list[str]) -> None:
    _WRITER.update(vocab=vocab, names=names)


def _write_shard(args: tuple) -> dict:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    (path, shard, lo, hi, seed, single, pairs, row_group) = args
    vocab, names = _WRITER["vocab"], _WRITER["names"]
    rng = np.random.default_rng([seed, 3, shard])
    lengths = rng.integers(2, 16, hi - lo)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).tolist()
    weights = 1.0 / (np.arange(len(vocab)) + 10.0)
    tokens = np.array(vocab, dtype=object)[rng.choice(len(vocab), offsets[-1], p=weights / weights.sum())]
    tokens = tokens.tolist()
    nulls = set((rng.choice(hi - lo, max(1, (hi - lo) // 2000), replace=False)).tolist())
    planted: dict[int, tuple[int, ...]] = {c - lo: (n,) for c, n in single}
    planted.update({c - lo: (a, b) for c, a, b in pairs})
    forms = rng.choice(len(FORMS), 2 * len(planted) + 1, p=FORM_P).tolist()
    spots = rng.random(2 * len(planted) + 1).tolist()
    texts: list[str | None] = []
    k = nulled = 0
    for j in range(hi - lo):
        words = tokens[offsets[j]:offsets[j + 1]]
        mention = planted.get(j)
        if mention is None:
            if j in nulls:
                nulled += 1
                texts.append(None)
            else:
                texts.append(" ".join(words))
            continue
        phrases = [render(names[n], FORMS[forms[k + i]]) for i, n in enumerate(mention)]
        if len(phrases) == 1:
            words.insert(int(spots[k] * (len(words) + 1)), phrases[0])
        else:  # at least one filler word between the two, so that no name spans both
            first = int(spots[k] * len(words))
            second = first + 1 + int(spots[k + 1] * (len(words) - first))
            words.insert(second, phrases[1])
            words.insert(first, phrases[0])
        k += len(phrases)
        texts.append(" ".join(words))
    table = pa.table({"TEXT": pa.array(texts, pa.string())})
    pq.write_table(table, path, row_group_size=row_group, compression="snappy")
    chars = sum(len(t) for t in texts if t)
    return {"rows": hi - lo, "chars": chars, "nulls": nulled}


def ensure_corpus(folder: Path, captions: int, shards: int, seed: int, vocabulary: int) -> dict:
    """Write the corpus (or reuse the one there when it was made with the same parameters and
    names); returns its description, with the planting plan and the names."""
    import numpy as np

    names, from_wordnet = all_names(seed)
    names_sha = hashlib.sha256(json.dumps(names).encode()).hexdigest()
    key = {"version": CORPUS_VERSION, "captions": captions, "shards": shards, "seed": seed, "vocabulary": vocabulary,
           "names_sha256": names_sha}
    meta_path = folder / "meta.json"
    if meta_path.exists() and json.loads(meta_path.read_text()).get("key") == key:
        meta = json.loads(meta_path.read_text())
        with np.load(folder / "plan.npz") as stored:
            meta["plan"] = {k: stored[k] for k in stored.files}
        meta["reused"] = True
        meta["names"] = names
        return meta
    started = time.perf_counter()
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    name_tokens = {t for n in names for t in expected_tokens(n)}
    for name in names:
        for form in FORMS:
            assert expected_tokens(render(name, form)) == expected_tokens(name), (name, form)
    vocab = filler_vocabulary(name_tokens, seed, vocabulary)
    plan = plan_planting(names, captions, seed)
    bounds = np.linspace(0, captions, shards + 1).astype(np.int64)
    per_shard = max(1, captions // shards)
    row_group = max(1, -(-per_shard // 8))  # about 8 row groups a shard
    order = np.argsort(plan["single_caption"])
    single_c, single_n = plan["single_caption"][order], plan["single_name"][order]
    order = np.argsort(plan["pair_caption"])
    pair_c, pair_a, pair_b = plan["pair_caption"][order], plan["pair_a"][order], plan["pair_b"][order]
    jobs = []
    for shard in range(shards):
        lo, hi = int(bounds[shard]), int(bounds[shard + 1])
        s0, s1 = np.searchsorted(single_c, [lo, hi])
        p0, p1 = np.searchsorted(pair_c, [lo, hi])
        jobs.append((str(folder / f"part-{shard:05d}.snappy.parquet"), shard, lo, hi, seed,
                     list(zip(single_c[s0:s1].tolist(), single_n[s0:s1].tolist())),
                     list(zip(pair_c[p0:p1].tolist(), pair_a[p0:p1].tolist(), pair_b[p0:p1].tolist())), row_group))
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(os.cpu_count() or 1, _start_writer, (vocab, names)) as pool:
        written = pool.map(_write_shard, jobs, chunksize=1)
    np.savez(folder / "plan.npz", **plan)
    (folder / "names.json").write_text(json.dumps(names))
    meta = {"key": key, "names_from_wordnet": from_wordnet, "vocabulary": len(vocab), "row_group_rows": row_group,
            "rows": sum(w["rows"] for w in written), "chars": sum(w["chars"] for w in written),
            "nulls": sum(w["nulls"] for w in written), "bytes": sum(p.stat().st_size for p in folder.glob("*.parquet")),
            "seconds_to_write": round(time.perf_counter() - started, 1)}
    meta_path.write_text(json.dumps(meta, indent=1) + "\n")
    meta["plan"] = plan
    meta["reused"] = False
    meta["names"] = names
    return meta


# -- engines (each runs in a child process: --child ENGINE) ----------------------------------------------

def shard_files(corpus: Path) -> list[Path]:
    return sorted(corpus.glob("part-*.parquet"))


def iter_captions(corpus: Path, limit: int, whole_shards: bool = False):
    """The first `limit` captions, shard after shard: per shard a list (whole_shards, as REAL reads
    a shard) or per 65,536-row batch."""
    import pyarrow.parquet as pq

    left = limit
    for path in shard_files(corpus):
        if left <= 0:
            return
        if whole_shards:
            texts = pq.read_table(path, columns=["TEXT"]).column(0).to_pylist()[:left]
            left -= len(texts)
            yield texts
            continue
        for batch in pq.ParquetFile(path).iter_batches(batch_size=65_536, columns=["TEXT"]):
            texts = batch.column(0).to_pylist()[:left]
            left -= len(texts)
            yield texts
            if left <= 0:
                return


def real_clean(text: str) -> str:
    """REAL's clean_text."""
    return (text.strip().replace("'", "").replace('"', "").replace("-", " ").replace("_", " ")
            .replace("  ", " ").lower())


def real_query(name: str) -> str:
    """REAL's FTS5 query for a name (parse_multi_words and the quoting in get_label_stats)."""
    text = real_clean(name).replace(" ", " + ")
    if "(" in text and ")" in text:
        text = text.replace("(", "").replace(")", "")
    if ("(" in name and ")" in name) or "." in name or "/" in name:
        return f'"{text}"'
    return text


def robust_query(name: str) -> str:
    """The same phrase, always quoted: for names whose REAL query is an FTS5 syntax error."""
    return '"' + " ".join(real_clean(name).replace("(", " ").replace(")", " ").split()) + '"'


def child_fts5(corpus: Path, names: list[str], limit: int, scratch: Path) -> dict:
    import sqlite3

    db = scratch / "fts5.db"
    db.unlink(missing_ok=True)
    started = time.perf_counter()
    conn = sqlite3.connect(db)
    conn.execute("CREATE VIRTUAL TABLE fts USING FTS5(TEXT)")
    conn.commit()
    rows = 0
    for texts in iter_captions(corpus, limit, whole_shards=True):
        normalised = [(t.replace('"', "").replace("'", "").replace("-", " ").replace("_", " "),) if t else ("N.A.",)
                      for t in texts]
        conn.executemany("INSERT INTO fts (TEXT) VALUES (?)", normalised)
        conn.commit()
        rows += len(texts)
        print(f"  fts5: {rows:,} captions inserted, {time.perf_counter() - started:.0f} s", flush=True)
    build = time.perf_counter() - started
    started = time.perf_counter()  # REAL's own query: it fetches the text and ranks the rows (bm25)
    cursor = conn.cursor()
    counts, syntax_errors = [], []
    for name in names:
        try:
            found = cursor.execute("SELECT rowid, text FROM fts WHERE fts MATCH ? ORDER BY RANK",
                                   (real_query(name),)).fetchall()
        except sqlite3.OperationalError as exc:
            syntax_errors.append([name, real_query(name), str(exc)])
            found = cursor.execute("SELECT rowid, text FROM fts WHERE fts MATCH ? ORDER BY RANK",
                                   (robust_query(name),)).fetchall()
        counts.append(len(found))
    query_ranked = time.perf_counter() - started
    started = time.perf_counter()  # an index reused for a new name list, counting rows only (not REAL's)
    failing = {e[0] for e in syntax_errors}
    for name in names:
        query_text = robust_query(name) if name in failing else real_query(name)
        cursor.execute("SELECT count(*) FROM fts WHERE fts MATCH ?", (query_text,)).fetchone()
    query_count = time.perf_counter() - started
    conn.close()
    size = db.stat().st_size
    db.unlink()
    return {"captions": rows, "build_s": build, "query_s": query_ranked, "query_count_only_s": query_count,
            "seconds": build + query_ranked, "counts": counts,
            "db_bytes": size, "syntax_errors": syntax_errors}


_QUOTES = re.compile(r"['\"]")
_SEPARATORS = re.compile(r"[\W_]+")


def loop_tokens(text: str) -> list[str]:
    text = _QUOTES.sub("", text)
    if not text.isascii():
        text = "".join(ch for ch in unicodedata.normalize("NFKD", text) if not unicodedata.combining(ch))
    return _SEPARATORS.sub(" ", text.lower()).split()


def child_python(corpus: Path, names: list[str], limit: int, scratch: Path) -> dict:
    started = time.perf_counter()
    index: dict[str, int] = {}
    pattern_of = []
    for name in names:
        pattern_of.append(index.setdefault(" ".join(loop_tokens(name)), len(index)))
    lengths = sorted({len(p.split()) for p in index})
    hits = [0] * len(index)
    rows = 0
    for texts in iter_captions(corpus, limit):
        for text in texts:
            if not text:
                continue
            toks = loop_tokens(text)
            found = set()
            for n in lengths:
                if n > len(toks):
                    break
                for i in range(len(toks) - n + 1):
                    pattern = index.get(" ".join(toks[i:i + n]))
                    if pattern is not None:
                        found.add(pattern)
            for pattern in found:
                hits[pattern] += 1
        rows += len(texts)
        if rows % 1_048_576 < 65_536:
            print(f"  python: {rows:,} captions, {time.perf_counter() - started:.0f} s", flush=True)
    return {"captions": rows, "seconds": time.perf_counter() - started, "counts": [hits[p] for p in pattern_of]}


def _promptgen_counts(names: list[str], totals: dict[str, int]) -> list[int]:
    from promptgen.counting.matching import normalise

    return [totals.get(p, 0) if p else 0 for p in normalise(names).to_pylist()]


def child_promptgen(corpus: Path, names: list[str], engine: str, workers: int, master: str) -> dict:
    from promptgen.counting.corpus import plan_parts, resolve_inputs
    from promptgen.counting.engines import ScanJob, run_embedded, run_spark

    started = time.perf_counter()
    files = resolve_inputs([str(corpus / "part-*.parquet")])
    parts = [part for file in files for part in plan_parts(file, "TEXT")]
    job = ScanJob(tuple(names), "TEXT")
    totals: dict[str, int] = {}
    state = {"rows": 0, "parts": 0, "errors": []}

    def on_result(result) -> None:
        if result.error:
            state["errors"].append([result.key, result.error])
        state["rows"] += result.rows
        state["parts"] += 1
        for pattern, n in result.counts.items():
            totals[pattern] = totals.get(pattern, 0) + n
        if state["parts"] % 10 == 0:
            print(f"  {engine}: {state['parts']}/{len(parts)} parts, {time.perf_counter() - started:.0f} s", flush=True)

    parallelism = workers
    if engine == "spark":
        parallelism = run_spark(parts, job, master, on_result)
    else:
        run_embedded(parts, job, workers, on_result)
    seconds = time.perf_counter() - started
    return {"captions": state["rows"], "seconds": seconds, "parts": len(parts), "workers": parallelism,
            "part_errors": state["errors"], "counts": _promptgen_counts(names, totals)}


def child_main(args: argparse.Namespace) -> int:
    corpus = Path(args.corpus)
    names = json.loads((corpus / "names.json").read_text())
    scratch = Path(args.result).parent
    if args.child == "fts5":
        result = child_fts5(corpus, names, args.limit, scratch)
    elif args.child == "python":
        result = child_python(corpus, names, args.limit, scratch)
    elif args.child == "embedded-1":
        result = child_promptgen(corpus, names, "embedded", 1, "")
    elif args.child == "embedded":
        result = child_promptgen(corpus, names, "embedded", os.cpu_count() or 1, "")
    else:
        result = child_promptgen(corpus, names, "spark", 0, args.spark_master)
    Path(args.result).write_text(json.dumps(result))
    return 0


# -- measuring a child ----------------------------------------------------------------------------------

_PAGE = os.sysconf("SC_PAGE_SIZE")
_TICK = os.sysconf("SC_CLK_TCK")
TIME = Path("/usr/bin/time").exists()  # GNU time: -f %M is the child's ru_maxrss


def tree_sample(root: int, cpu: dict[int, float]) -> tuple[int, int]:
    """Bytes resident in a process and all its descendants, and how many processes that is; each
    one's CPU seconds so far go into `cpu` (pid -> seconds)."""
    children: dict[int, list[int]] = defaultdict(list)
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/stat") as handle:
                    ppid = int(handle.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children[ppid].append(int(entry.name))
    total, count, stack = 0, 0, [root]
    while stack:
        pid = stack.pop()
        try:
            with open(f"/proc/{pid}/statm") as handle:
                resident = int(handle.read().split()[1]) * _PAGE
            with open(f"/proc/{pid}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
            cpu[pid] = max(cpu.get(pid, 0.0), (int(fields[11]) + int(fields[12])) / _TICK)
            total += resident
            count += 1
        except (OSError, ValueError, IndexError):
            pass
        stack += children.get(pid, [])
    return total, count


def run_child(engine: str, args: argparse.Namespace, limit: int, scratch: Path) -> dict:
    """Run one engine in a child process. Peak RSS: the sum over the child and all its
    descendants (Spark's JVM and Python workers, the pool's workers), sampled every 0.25 s; the
    largest single process from /usr/bin/time (its wait4 of the child, which covers the
    descendants the child waited for). CPU: per process, the last sample."""
    result_path = scratch / f"{engine}.json"
    command = [sys.executable, str(Path(__file__).resolve()), "--child", engine, "--corpus", args.corpus,
               "--limit", str(limit), "--result", str(result_path), "--spark-master", args.spark_master]
    maxrss_path = scratch / f"{engine}.maxrss"
    if TIME:
        command = ["/usr/bin/time", "-f", "%M", "-o", str(maxrss_path), *command]
    env = {**os.environ, "PYTHONPATH": str(CHECKOUT)}
    print(f"{engine}: started", flush=True)
    wall = time.perf_counter()
    process = subprocess.Popen(command, cwd=CHECKOUT, env=env)
    peak = {"bytes": 0, "processes": 0}
    cpu: dict[int, float] = {}
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            rss, count = tree_sample(process.pid, cpu)
            peak["bytes"] = max(peak["bytes"], rss)
            peak["processes"] = max(peak["processes"], count)
            done.wait(0.25)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    process.wait()
    done.set()
    sampler.join()
    wall = time.perf_counter() - wall
    if process.returncode != 0:
        raise SystemExit(f"{engine} failed (exit {process.returncode})")
    result = json.loads(result_path.read_text())
    largest = float(maxrss_path.read_text().split()[-1]) / 1024 if TIME else None
    result.update(engine=engine, process_wall_s=wall, peak_tree_rss_mib=peak["bytes"] / 2**20,
                  peak_processes=peak["processes"], largest_process_mib=largest, cpu_s=sum(cpu.values()))
    print(f"{engine}: {result['captions']:,} captions in {result['seconds']:.1f} s "
          f"({result['captions'] / result['seconds']:,.0f}/s), peak RSS {peak['bytes'] / 2**20:,.0f} MiB", flush=True)
    return result


# -- main -----------------------------------------------------------------------------------------------

def machine() -> dict:
    import pyarrow
    import sqlite3

    info = {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "pyarrow": pyarrow.__version__, "sqlite": sqlite3.sqlite_version}
    try:
        import pyspark

        info["pyspark"] = pyspark.__version__
    except ImportError:
        pass
    try:
        java = subprocess.run(["java", "-version"], capture_output=True, text=True, timeout=30)
        info["java"] = (java.stderr or java.stdout).splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        pass
    try:
        info["memory_gib"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError):
        pass
    return info


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--captions", type=int, default=10_000_000)
    parser.add_argument("--shards", type=int, default=20)
    parser.add_argument("--seed", type=int, default=16)
    parser.add_argument("--vocabulary", type=int, default=1_000_000, help="distinct filler words in the corpus")
    parser.add_argument("--corpus", default="/tmp/wtbench_corpus", help="where the parquet shards are written")
    parser.add_argument("--baseline-captions", type=int, default=0,
                        help="time fts5 and python on this many captions (default: all)")
    parser.add_argument("--engines", default=",".join(ENGINES))
    parser.add_argument("--spark-master", default=f"local[{os.cpu_count() or 1}]")
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--child", choices=ENGINES, help=argparse.SUPPRESS)
    parser.add_argument("--limit", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child_main(args)

    started = time.perf_counter()
    engines = [e for e in args.engines.split(",") if e]
    unknown = set(engines) - set(ENGINES)
    if unknown:
        parser.error(f"unknown engines {sorted(unknown)}; known: {', '.join(ENGINES)}")
    import promptgen

    print(f"promptgen from {Path(promptgen.__file__).parent}", flush=True)
    corpus = ensure_corpus(Path(args.corpus), args.captions, args.shards, args.seed, args.vocabulary)
    names, plan = corpus["names"], corpus["plan"]
    print(f"corpus {args.corpus}: {corpus['rows']:,} captions, {args.shards} shards of "
          f"{corpus['row_group_rows']:,}-row groups, {corpus['bytes'] / 2**20:,.0f} MiB, "
          f"{'reused' if corpus['reused'] else 'written in %.0f s' % corpus['seconds_to_write']}; "
          f"{len(names):,} names ({corpus['names_from_wordnet']:,} from WordNet)", flush=True)
    sets = match_sets(names)
    baseline_limit = min(args.baseline_captions or args.captions, args.captions)
    expected = {args.captions: expected_counts(plan, sets, args.captions)}
    if baseline_limit != args.captions:
        expected[baseline_limit] = expected_counts(plan, sets, baseline_limit)
    full = expected[args.captions]
    assert min(full) >= 1, "a name was never planted"
    with_name = len(set(plan["single_caption"].tolist()) | set(plan["pair_caption"].tolist()))

    scratch = Path(f"/tmp/wtbench_run_{os.getpid()}")
    scratch.mkdir(parents=True, exist_ok=True)
    rows = []
    try:
        for engine in engines:
            limit = baseline_limit if engine in ("fts5", "python") else args.captions
            result = run_child(engine, args, limit, scratch)
            want = expected[limit]
            mismatches = [[names[i], want[i], got] for i, got in enumerate(result.pop("counts")) if got != want[i]]
            result["mismatches"] = len(mismatches)
            result["mismatch_examples"] = mismatches[:50]
            for name, exp, got in mismatches[:20]:
                print(f"  MISMATCH {engine}: {name!r} expected {exp}, got {got}", flush=True)
            result["captions_per_s"] = result["captions"] / result["seconds"]
            rows.append(result)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    by_engine = {r["engine"]: r for r in rows}
    base = by_engine.get("fts5")
    for row in rows:
        row["x_fts5"] = row["captions_per_s"] / base["captions_per_s"] if base else None
        if base and "query_s" in base:
            row["x_fts5_queries_only"] = (row["captions_per_s"] / (base["captions"] / base["query_s"])
                                          if row["engine"] != "fts5" else None)

    per_core = by_engine.get("embedded-1")
    projection = []
    for engine, row in by_engine.items():
        cores = 1 if engine in ("fts5", "python", "embedded-1") else None
        if cores is None:
            continue
        for corpus_name, size in LAION.items():
            hours = size / row["captions_per_s"] / 3600
            entry = {"engine": engine, "corpus": corpus_name, "captions": size, "core_hours": hours}
            if engine == "embedded-1":
                entry.update({f"hours_on_{n}_cores": hours / n for n in (2, 16, 64)})
            projection.append(entry)
    scaling = None
    if per_core and "embedded" in by_engine:
        workers = by_engine["embedded"]["workers"]
        scaling = by_engine["embedded"]["captions_per_s"] / (workers * per_core["captions_per_s"])

    table = ["| engine | captions | build s | query s | total s | captions/s | x REAL FTS5 | peak RSS MiB (all processes) "
             "| largest process MiB | CPU s | counts = planted |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    label = {"fts5": "REAL: SQLite FTS5, 1 core", "python": "Python n-gram loop, 1 core",
             "embedded-1": "embedded, 1 worker", "embedded": f"embedded, {os.cpu_count()} workers",
             "spark": f"Spark {args.spark_master}"}
    for row in rows:
        check = "yes" if row["mismatches"] == 0 else f"**no: {row['mismatches']} names differ**"
        prefix = " (prefix)" if row["captions"] < args.captions else ""
        phases = f"{row['build_s']:.1f} | {row['query_s']:.1f}" if "build_s" in row else "- | -"
        speedup = f"{row['x_fts5']:.1f}x" if row["x_fts5"] else "-"
        table.append(f"| {label[row['engine']]} | {row['captions']:,}{prefix} | {phases} | {row['seconds']:.1f} "
                     f"| {row['captions_per_s']:,.0f} | {speedup} | {row['peak_tree_rss_mib']:,.0f} "
                     f"| {'%.0f' % row['largest_process_mib'] if row['largest_process_mib'] else '-'} | {row['cpu_s']:.0f} "
                     f"| {check} |")
    projection_table = ["| engine | corpus | core-hours | hours on 2 cores | hours on 16 cores | hours on 64 cores |",
                        "|---|---|---|---|---|---|"]
    def duration(hours: float) -> str:
        return f"{hours:,.1f} h" if hours >= 1 else f"{hours * 60:.1f} min"

    for entry in projection:
        cells = [duration(entry[f"hours_on_{n}_cores"]) if entry["engine"] == "embedded-1" else "-"
                 for n in (2, 16, 64)]
        projection_table.append(f"| {label[entry['engine']]} | {entry['corpus']} ({entry['captions'] / 1e6:,.0f}M) "
                                f"| {entry['core_hours']:,.2f} | " + " | ".join(cells) + " |")

    total = time.perf_counter() - started
    print()
    print("\n".join(table))
    print()
    print("\n".join(projection_table))
    summary = {}
    if base and "embedded" in by_engine:
        summary["speedup_embedded_all_cores_vs_fts5"] = by_engine["embedded"]["x_fts5"]
    if base and per_core:
        summary["speedup_embedded_1_worker_vs_fts5"] = per_core["x_fts5"]
        summary["speedup_embedded_all_cores_vs_fts5_queries_only"] = by_engine.get("embedded", {}).get(
            "x_fts5_queries_only")
    if scaling is not None:
        summary["embedded_scaling_efficiency"] = scaling
    if base:
        summary["fts5_syntax_errors"] = len(base["syntax_errors"])
        summary["fts5_query_s_real_select_text_order_by_rank"] = base["query_s"]
        summary["fts5_query_s_count_only"] = base["query_count_only_s"]
        summary["fts5_db_mib"] = base["db_bytes"] / 2**20
    print()
    for key, value in summary.items():
        print(f"{key}: {value:.3f}" if isinstance(value, float) else f"{key}: {value}")
    if base and base["syntax_errors"]:
        print("names whose REAL query is an FTS5 syntax error (counted with the phrase quoted):")
        for name, query, error in base["syntax_errors"][:20]:
            print(f"  {name!r}: MATCH '{query}' -> {error}")
    print(f"total run time {total / 60:.1f} min", flush=True)

    planted = plan["planted"]
    out = {"date": time.strftime("%Y-%m-%d"), "machine": machine(),
           "command": " ".join([".venv/bin/python", "benchmarks/count_names.py", *sys.argv[1:]]),
           "corpus": {k: v for k, v in corpus.items() if k not in ("plan", "names", "key")} | corpus["key"]
           | {"folder": args.corpus, "captions_with_a_name": with_name,
              "captions_with_two_names": int(len(plan["pair_caption"])),
              "planted_mentions": int(planted.sum())},
           "names": {"count": len(names), "from_wordnet": corpus["names_from_wordnet"],
                     "distinct_token_sequences": len({expected_tokens(n) for n in names}),
                     "planted_min": int(planted.min()), "planted_max": int(planted.max()),
                     "planted_once": int((planted == 1).sum()),
                     "expected_min": min(full), "expected_median": sorted(full)[len(full) // 2],
                     "expected_max": max(full)},
           "baseline_captions": baseline_limit, "engines": rows, "summary": summary, "projection": projection,
           "table": table, "projection_table": projection_table, "total_seconds": total}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1, default=float) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
