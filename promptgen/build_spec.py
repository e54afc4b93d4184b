"""A `--build` spec, `BUILDER[:SOURCE[+SOURCE...]][,key=value...]`, split in one place for
`promptgen eval` (which checks and types the options) and the pipeline (which pins the sources
and keys the files they name)."""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["BuildSpec", "split_build"]

_BUILD_PARAM = re.compile(r",(?=\s*\w+\s*=)")  # a comma that starts key=value, not one inside a value


@dataclass
class BuildSpec:
    """`BUILDER[:SOURCE[+SOURCE...]][,key=value...]` split as written (nothing stripped)."""

    builder: str
    source_text: str
    params: list[str]

    @property
    def sources(self) -> list[str]:
        return self.source_text.split("+") if self.source_text else []

    def pairs(self) -> list[tuple[str, str]]:
        return [tuple(part.strip() for part in param.partition("=")[::2]) for param in self.params]


def split_build(spec: str) -> BuildSpec:
    head, *params = _BUILD_PARAM.split(spec)
    builder, _, source_text = head.partition(":")
    return BuildSpec(builder, source_text, params)
