"""Shared by the count-names tests (test_count_names.py, test_count_engines.py): a names set whose
names the test chooses, caption files in every format, random captions with planted names, an
independent reference of REAL's matching rule, and the counts set as written."""

from __future__ import annotations

import csv
import gzip
import json
import random
import re
import unicodedata
from pathlib import Path

from promptgen.store import Store, make_record

DATASET = "capt"

# The names the tests count: class name first, then its other names. Every name here has letters,
# so each one can be found; the rule's corner cases are all among them.
NAMES = {
    "dog": ["hot dog", "dogs", "dog's", "st. bernard"],
    "cat": ["red cat", "naïve cat", "catalog"],
    "shirt": ["t-shirt", "T shirt", "T_Shirt"],
    "cafe": ["café", "c++", "(x)", "a.b", "a/b"],
    "zorblax": ["NEAR", "AND", "\"quoted\"", "東京"],
}


def write_names(root: Path, tmp_path: Path, names: dict[str, list[str]] | None = None,
                dataset: str = DATASET) -> None:
    """A synonyms set holding exactly `names` (class -> its other names), written as the synonyms
    stage writes one, for a class list of the dict's keys."""
    names = NAMES if names is None else names
    classes_file = tmp_path / f"{dataset}-classes.txt"
    classes_file.write_text("\n".join(names) + "\n", encoding="utf-8")
    store = Store(root)
    classes = store.classes(dataset, classes_file)
    records = [make_record(class_index=c, class_name=class_name, stage="synonyms", kind="synonym", text=name,
                           template=None, sample_index=None, request_key=None, model=None,
                           source="official" if name == class_name else "wordnet")
               for c, (class_name, others) in enumerate(names.items()) for name in [class_name, *others]]
    store.write_version(dataset, "synonyms", records,
                        {"stage": "synonyms", "source": "wordnet", "text_kind": "synonym",
                         "classes": {"count": len(classes), "hash": classes.hash}}, classes)


def count_names(cli, *captions: str | Path, extra: tuple[str, ...] = (), dataset: str = DATASET):
    args: list[str] = ["count-names", dataset]
    for caption_file in captions:
        args += ["--captions", str(caption_file)]
    return cli(*args, "--no-progress", *extra)


def set_dir(root: Path, set_name: str = "counts", dataset: str = DATASET) -> Path:
    return root / "prompts" / dataset / set_name


def records_bytes(root: Path, version: int = 1, set_name: str = "counts") -> bytes:
    return (set_dir(root, set_name) / f"v{version}.jsonl").read_bytes()


def records(root: Path, version: int = 1, set_name: str = "counts") -> list[dict]:
    return [json.loads(line) for line in records_bytes(root, version, set_name).decode().splitlines()]


def manifest(root: Path, version: int = 1, set_name: str = "counts") -> dict:
    return json.loads((set_dir(root, set_name) / f"v{version}.manifest.json").read_text(encoding="utf-8"))


def journal(root: Path, version: int = 1, set_name: str = "counts") -> list[dict]:
    path = set_dir(root, set_name) / f"v{version}.requests.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()] if path.exists() else []


def counts(root: Path, version: int = 1) -> dict[str, int]:
    """name -> count (a name listed in two classes has the same count in both)."""
    found: dict[str, int] = {}
    for record in records(root, version):
        assert found.setdefault(record["text"], record["count"]) == record["count"]
    return found


# -- caption files ----------------------------------------------------------------------------------

def write_captions(path: Path, captions: list[str | None], column: str = "TEXT", row_group_size: int | None = None,
                   extra_columns: dict[str, list] | None = None) -> Path:
    """The captions as the file's name says: .parquet, .csv, .tsv, .jsonl or .txt, each with a URL
    column beside the captions (not for text), and gzip-compressed when the name ends in .gz."""
    name = path.name[:-3] if path.name.endswith(".gz") else path.name
    urls = [f"https://example.com/{i}.jpg" for i in range(len(captions))]
    columns = {"URL": urls, column: captions, **(extra_columns or {})}
    if name.endswith(".parquet"):
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table({k: pa.array(v, pa.string()) for k, v in columns.items()}), path,
                       row_group_size=row_group_size)
        return path
    if name.endswith((".csv", ".tsv")):
        lines: list[str] = []

        class Sink:
            def write(self, text: str) -> None:
                lines.append(text)

        writer = csv.writer(Sink(), delimiter="\t" if name.endswith(".tsv") else ",", lineterminator="\n")
        writer.writerow(list(columns))
        writer.writerows(zip(*columns.values()))
        text = "".join(lines)
    elif name.endswith(".jsonl"):
        text = "".join(json.dumps(dict(zip(columns, row))) + "\n" for row in zip(*columns.values()))
    elif name.endswith(".txt"):
        assert all(c is not None and "\n" not in c and "\r" not in c for c in captions)
        text = "".join(c + "\n" for c in captions)
    else:
        raise AssertionError(f"no writer for {path}")
    data = text.encode("utf-8")
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
    return path


def corrupt_row_group(path: Path, group: int, column: str = "TEXT") -> None:
    """Overwrite the caption pages of one row group of a parquet file: its footer still reads, that
    row group's captions do not."""
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(path)
    chunk = parquet.metadata.row_group(group).column(parquet.schema_arrow.get_field_index(column))
    start = chunk.dictionary_page_offset or chunk.data_page_offset
    data = bytearray(path.read_bytes())
    data[start:start + chunk.total_compressed_size] = b"\xff" * chunk.total_compressed_size
    path.write_bytes(bytes(data))


# -- random captions with planted names -------------------------------------------------------------

WORDS = ["a", "photo", "of", "the", "my", "on", "big", "red", "cat", "cats", "dog", "dogs", "hot", "catalog",
         "concatenate", "shirt", "t", "tshirt", "cafe", "bernard", "st", "c", "x", "near", "nearly", "and", "b",
         "quoted", "naive", "zorblax", "logo", "2024", "c3po", "東京", "straße"]
PLANTED = [name for per_class in NAMES.values() for name in per_class] + list(NAMES)
SEPARATORS = [" ", " ", " ", " ", "  ", ", ", "-", "_", " / ", ". ", "\t", " (", ") ", "'", "’", "…", "!", " 😀 ",
              '"', "+", "*", ":"]
ACCENTS = {"e": ["é", "è", "e\u0301"], "a": ["à", "â", "a\u0300"], "i": ["ï", "i\u0308"], "o": ["ö"]}


def _variant(word: str, rng: random.Random) -> str:
    shape = rng.random()
    if shape < 0.15:
        word = word.upper()
    elif shape < 0.3:
        word = word.title()
    if rng.random() < 0.15:
        word = "".join(rng.choice(ACCENTS[ch.lower()]) if ch.lower() in ACCENTS and rng.random() < 0.5 else ch
                       for ch in word)
    return word


def random_captions(n: int, seed: int = 0, nulls: bool = False) -> list[str | None]:
    """`n` captions of 0 to 14 words, about a third of them planted names, in random case, some
    with accents (composed or not), joined by spaces, punctuation, hyphens, underscores, quotes
    (a quote between two words joins them) and emoji; with `nulls`, some None and empty ones."""
    rng = random.Random(seed)
    captions: list[str | None] = []
    for _ in range(n):
        if nulls and rng.random() < 0.03:
            captions.append(rng.choice([None, ""]))
            continue
        pieces = [_variant(rng.choice(PLANTED if rng.random() < 0.3 else WORDS), rng)
                  for _ in range(rng.randint(0, 14))]
        text = ""
        for piece in pieces:
            text += piece + rng.choice(SEPARATORS)
        captions.append(text[: rng.randint(len(text) - 3, len(text))] if text else text)
    return captions


# -- the rule, written again from its description ----------------------------------------------------

def reference_tokens(text: str) -> list[str]:
    """REAL's view of a text: quotes removed, accents removed, lower case, then the runs of letters
    and digits ("-", "_" and every other character separate them)."""
    text = text.replace("'", "").replace('"', "")
    text = "".join(ch for ch in unicodedata.normalize("NFD", text) if not unicodedata.combining(ch))
    return re.findall(r"[^\W_]+", text.lower())


def reference_counts(captions: list[str | None], names: list[str]) -> dict[str, int]:
    """Per name, the captions in which its tokens appear consecutively: a plain loop over every
    caption and every name."""
    tokenised = [reference_tokens(c) for c in captions if c]
    found = {}
    for name in names:
        want = reference_tokens(name)
        n = 0
        for got in tokenised:
            if want and any(got[i:i + len(want)] == want for i in range(len(got) - len(want) + 1)):
                n += 1
        found[name] = n
    return found
