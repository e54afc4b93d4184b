"""The JSON file of a query template (`prompts/templates/<name>.v<N>.json`), typed.

The model only checks: templates.py still builds the QueryTemplate from the file's data, with
its own checks of what the values mean (placeholders, parsers, kinds). What the model adds is that
an unknown key, which the loader used to skip without a word (a "temprature" in `sampling`, a
"sytem" prompt), is an error naming the key and the keys a template may have. Templates are
written by hand, so values are read as leniently as before ("max_chars": "300" is 300, a numeric
question id is its text). `format` is optional (a template without one is format 1); `version` is
the template's own version, the N of its file name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import ConfigDict, Field, ValidationError

from promptgen.errors import PromptgenError
from promptgen.typed_files import FileModel, Number, refusal

__all__ = ["TEMPLATE_FORMAT", "TemplateFile", "check_template"]

TEMPLATE_FORMAT = "promptgen.query-template/1"


class _Lenient(FileModel):
    model_config = ConfigDict(strict=False, coerce_numbers_to_str=True)


class QuestionEntry(_Lenient):
    id: str
    text: str


class Sampling(_Lenient):
    """The sampling parameters a request may carry (llm.client.SAMPLING_KEYS)."""

    temperature: Number | None = None
    top_p: Number | None = None
    max_tokens: int | None = None
    stop: str | list[str] | None = None
    n: int | None = None
    seed: int | None = None
    presence_penalty: Number | None = None
    frequency_penalty: Number | None = None
    response_format: dict[str, Any] | None = None


class TemplateFile(_Lenient):
    format: Literal["promptgen.query-template/1"] | None = None
    name: str | None = None
    version: int | None = None
    kind: str | None = None
    description: str | None = None
    citation: str | None = None
    system: str | None = None
    questions: list[QuestionEntry] | None = None
    placeholders: list[str] | None = None
    sampling: Sampling | None = None
    parser: str | None = None
    append: str | None = None
    max_chars: int | None = None
    text_kind: str | None = None
    # any value here: templates._read checks these two with messages that show a valid one. BaseModel
    # has a `schema` method, so the field is named schema_ and reads the key "schema"
    schema_: Any = Field(None, alias="schema")
    repair: Any = None


def check_template(data: Any, path: Path | str) -> TemplateFile:
    """The template file as a model; an unknown key, a question without id or text, or a value
    of the wrong type is refused, naming the file and the key."""
    if isinstance(data, dict) and data.get("format", TEMPLATE_FORMAT) != TEMPLATE_FORMAT:
        raise PromptgenError(f"template {path} is of format {data['format']!r}; this promptgen reads "
                             f"{TEMPLATE_FORMAT!r}", f'write "format": "{TEMPLATE_FORMAT}", or leave the key out')
    try:
        return TemplateFile.model_validate(data)
    except ValidationError as exc:
        raise refusal(path, "query template", exc, TemplateFile,
                      "remove or correct the key; the templates in prompts/templates/ show every key in use") from None
