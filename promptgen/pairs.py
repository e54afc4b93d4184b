"""A plan of class pairs, as the differentiate stage asks them and as it keeps them on disk.

`PairPlan` is the chosen pairs (i < j) with their scores and how they were chosen; `pairs.json`
holds it next to the set version so that a resumed run asks the same pairs. Finding the pairs
(from images or from a head's columns) needs CLIP and lives in promptgen.clip.pairs; this module
is only the data type and its file, so that stages/ needs nothing from clip/.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from promptgen.errors import PromptgenError
from promptgen.fileio import atomic_write_text

__all__ = ["PairPlan", "pair_key", "all_pairs_count", "load_pair_plan", "save_pair_plan", "PAIRS_FORMAT"]

PAIRS_FORMAT = "promptgen.pairs/1"


def pair_key(i: int, j: int) -> str:
    """The unordered pair's key, FuDD's "i_j" with i < j."""
    return f"{min(i, j)}_{max(i, j)}"


def all_pairs_count(num_classes: int) -> int:
    return num_classes * (num_classes - 1) // 2


@dataclass
class PairPlan:
    """Pairs (i < j) in the order they were chosen (most confusable first), with their score
    (images whose top-k holds both, or the cosine of the two head columns)."""

    method: str
    num_classes: int
    pairs: list[tuple[int, int]]
    scores: list[float]
    settings: dict = field(default_factory=dict)
    stats: dict = field(default_factory=dict)

    @property
    def all_pairs(self) -> int:
        return all_pairs_count(self.num_classes)

    @property
    def sha256(self) -> str:
        return "sha256:" + hashlib.sha256(json.dumps(self.pairs, separators=(",", ":")).encode()).hexdigest()

    def summary(self) -> dict:
        return {"method": self.method, **self.settings, "classes": self.num_classes, "pairs": len(self.pairs),
                "all_pairs": self.all_pairs, "pairs_sha256": self.sha256, **self.stats}

    def to_json(self) -> dict:
        return {"format": PAIRS_FORMAT, **self.summary(),
                "list": [[i, j, round(float(s), 6)] for (i, j), s in zip(self.pairs, self.scores)]}


def save_pair_plan(plan: PairPlan, path: Path) -> None:
    atomic_write_text(path, json.dumps(plan.to_json(), ensure_ascii=False) + "\n", durable=True)


def load_pair_plan(path: Path) -> PairPlan:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise PromptgenError(f"cannot read the pair list {path} ({exc})",
                             "start a new version without --resume") from None
    settings_keys = ("k", "partners", "min_count", "max_pairs")
    plan = PairPlan(data["method"], int(data["classes"]), [(int(i), int(j)) for i, j, _ in data["list"]],
                    [float(s) for _, _, s in data["list"]],
                    {k: data[k] for k in settings_keys if k in data},
                    {k: v for k, v in data.items() if k not in settings_keys + (
                        "format", "method", "classes", "pairs", "all_pairs", "pairs_sha256", "list")})
    if plan.sha256 != data.get("pairs_sha256"):
        raise PromptgenError(f"the pair list {path} does not match its checksum", "start a new version without --resume")
    return plan
