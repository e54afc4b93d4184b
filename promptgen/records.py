"""The records of a prompt set (`vN.jsonl`, one JSON object a line), typed.

A record's fields are those `store.make_record` writes, plus the optional ones each producer adds:
`position` (bullets and list answers, wordnet lemmas), `source` (synonyms: official, llm, wordnet),
`wnid`/`match` (wordnet), `source_key` (an import whose key differs from the class name), the
pair fields of a differential set (`stages.differentiate.pair_records`) and the caption counts of a
counts set (`counting/`, the `real-metrics` import: `count` raw, `judged`/`relevant`/`relevance` from
the LLM check, `scaled_count` = count x relevance). Records have no format
field of their own: they are part of a prompt set, whose manifest carries the format version
(`store.MANIFEST_FORMAT`), so a change to the fields here is a change of that format.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import ConfigDict, TypeAdapter, ValidationError
from typing_extensions import NotRequired, TypedDict

from promptgen.errors import PromptgenError
from promptgen.typed_files import FileModel, Number, refusal

__all__ = ["Record", "check_records", "parse_records", "records_text"]


class Record(FileModel):
    id: str
    class_index: int
    class_name: str
    stage: str
    kind: str
    text: str
    template: str | None
    sample_index: int | None
    request_key: str | None
    model: str | None
    position: int | None = None
    source: str | None = None
    wnid: str | None = None
    match: str | None = None
    source_key: str | None = None
    pair: str | None = None
    pair_classes: list[int] | None = None
    other_class_index: int | None = None
    other_class_name: str | None = None
    attribute: str | None = None
    attribute_index: int | None = None
    salvaged: bool | None = None
    count: int | None = None
    judged: int | None = None
    relevant: int | None = None
    relevance: Number | None = None
    scaled_count: Number | None = None


def _fields_as_typed_dict() -> Any:
    """Record's fields as a TypedDict, checked by pydantic-core without building a model per record
    (a set of 5,800 records checks in 5 ms instead of 25), and derived from Record so the two never
    disagree."""
    fields = {name: (info.annotation if info.is_required() else NotRequired[info.annotation])
              for name, info in Record.model_fields.items()}
    checked = TypedDict("RecordFields", fields)  # type: ignore[misc]
    checked.__pydantic_config__ = ConfigDict(extra="forbid", strict=True)  # type: ignore[attr-defined]
    return checked


_RECORDS = TypeAdapter(list[_fields_as_typed_dict()])  # type: ignore[misc]
_FIX = "records are written by promptgen: restore the file, or write the set again (a new version)"


def check_records(records: list[dict], path: Path | str, numbers: list[int] | None = None,
                  counted: str = "record", fix: str = _FIX) -> None:
    """Refuse records with an unknown field, a missing one, or a value of the wrong type; a problem
    names the record's number (`numbers[i]` for the i-th, else i + 1) as `counted`."""
    try:
        _RECORDS.validate_python(records)
    except ValidationError as exc:
        raise refusal(path, "records file", exc, Record, fix, first_index_is=counted,
                      index_base=numbers or list(range(1, len(records) + 1))) from None


def parse_records(text: str, path: Path | str, fix: str = _FIX) -> list[dict]:
    """The records of a `vN.jsonl` text (blank lines skipped), checked. The lines are parsed as one
    JSON array, about twice as fast as one `json.loads` a line, which pays for the check. `fix` is
    the hint of an error (the text may be one about to be written)."""
    lines = text.split("\n")  # not splitlines(): a text may hold U+2028, which json.dumps leaves as it is
    numbers = [number for number, line in enumerate(lines, 1) if line.strip()]
    try:
        records = json.loads("[" + ",".join(lines[number - 1] for number in numbers) + "]")
    except ValueError:
        records = None
    if not isinstance(records, list) or len(records) != len(numbers):  # find the line that is not one value
        for number in numbers:
            try:
                json.loads(lines[number - 1])
            except ValueError as exc:
                raise PromptgenError(f"{path} line {number} is not valid JSON ({exc})", fix) from None
    check_records(records, path, numbers, counted="line", fix=fix)
    return records


def records_text(records: list[dict], path: Path | str) -> str:
    """The records as a `vN.jsonl` text, after checking that it reads back: a field the model does
    not know is refused when a set is written, not when someone reads it later."""
    text = "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records)
    parse_records(text, path, "nothing was written: the code that made these records has a bug")
    return text
