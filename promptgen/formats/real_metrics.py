"""REAL's published metrics JSON as a counts set (`promptgen import --format real-metrics`).

REAL (Parashar et al., CVPR 2024; docs/methods.md, real) publishes, per dataset and corpus,
`analysis/laion/<dataset>/metrics-<corpus>.json`: `{"0": {"name": official, "alternates": {name:
caption count}, "most_common_name": ..., ...}, ...}`, keyed by label index. The import writes one
`name_counts.count_record` per (class, name): the class's own name first (source "official", its
count looked up as REAL does), then every other name of `alternates` in file order (source
"real"). The file's `most_common_name` is not a record: the manifest says for how many classes
REAL's rule on the imported counts gives it back.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from promptgen.classes import ClassList
from promptgen.errors import PromptgenError
from promptgen.fileio import sha256_file
from promptgen.name_counts import COUNTS_TEXT_KIND, count_record
from promptgen.rename import choose_names, counted_candidates, read_real_metrics, real_clean, real_metrics_counts
from promptgen.store import Store, VersionInfo, class_summary, offline_manifest

__all__ = ["import_real_metrics", "REAL_RULE", "same_name"]

REAL_RULE = "choose_names: scorer counts, filters subset, margin 0 (REAL's find_most_common_name, RELAXED)"


def same_name(a: str, b: str) -> bool:
    """Two names that make the same CLIP prompts: CLIP's tokenizer lower-cases, so case alone does
    not count (the published most_common_name is often the lower-cased official name)."""
    return a.casefold() == b.casefold()


def import_real_metrics(store: Store, classes: ClassList, path: str | Path, set_name: str = "counts",
                        notice: str | None = None) -> tuple[VersionInfo, dict]:
    """Import REAL's metrics file as a new version of the counts set `set_name`; returns the
    version and the manifest's import section (with the check of REAL's rule)."""
    path = Path(path)
    if not path.is_file():
        raise PromptgenError(f"{path} does not exist", "check the file path (REAL's analysis/laion/DATASET/"
                                                       "metrics-CORPUS.json)")
    entries = read_real_metrics(path, classes)  # label order; the official names checked loosely
    counted = real_metrics_counts(entries, classes)
    records = [count_record(class_index=c, class_name=classes.names[c], name=name, count=count, stage="import",
                            source="official" if k == 0 else "real")
               for c, names in enumerate(counted) for k, (name, count) in enumerate(names)]
    absent = [{"class_index": c, "class_name": classes.names[c], "reason": "official name not in alternates"}
              for c, e in enumerate(entries)
              if e["name"] not in e["alternates"] and real_clean(e["name"]) not in e["alternates"]]
    section = {"format": "real-metrics", "file": path.name, "sha256": sha256_file(path),
               "official_names_absent": absent, "real_rule": _check_real_rule(classes, entries, counted)}
    per_class = Counter(r["class_index"] for r in records)
    manifest = offline_manifest("import", "file", {
        "text_kind": COUNTS_TEXT_KIND,
        "classes": class_summary(classes),
        "import": section,
        "counts": {"records": len(records), "classes": len(classes), "classes_without_texts": 0,
                   "texts_per_class_min": min(per_class.values()), "texts_per_class_max": max(per_class.values())},
        "tokens": {"prompt": 0, "completion": 0}, "cost_usd": None,
    })
    if notice:
        manifest["license"] = notice
    return store.write_version(classes.dataset, set_name, records, manifest, classes=classes), section


def _check_real_rule(classes: ClassList, entries: list[dict], counted: list[list[tuple[str, int]]]) -> dict:
    """REAL's rule on the counts as imported, against the file's most_common_name (where it has one):
    the classes it gives back, and the others (REAL's head reads most_common_name as published)."""
    candidates, lookup = counted_candidates(classes, [[(n, float(v)) for n, v in names] for names in counted])
    chosen = choose_names(classes, candidates, "counts", filters=("subset",), margin=0.0, counts=lookup).chosen
    checked = [c for c, e in enumerate(entries) if "most_common_name" in e]
    differs = [{"class_index": c, "class_name": classes.names[c], "published": entries[c]["most_common_name"],
                "rule": chosen[c]} for c in checked if not same_name(chosen[c], entries[c]["most_common_name"])]
    return {"rule": REAL_RULE, "compared": "ignoring case", "checked": len(checked),
            "reproduced": len(checked) - len(differs), "differs": differs}
