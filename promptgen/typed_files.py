"""What the typed models of promptgen's files share: unknown keys are refused, types are checked
without coercion, and a model writes back exactly the keys it read, in the order it read them.

A file's bytes are `json.dumps` of a dict, so key order is part of them; pydantic dumps fields in
the order the model declares them, which differs between kinds of file (an import's manifest puts
`model` before `classes`, a describe manifest after). Each model therefore remembers the order of
the keys it was given and dumps in that order, so `dump(Model.model_validate(data)) == data`, byte
for byte once serialised, for every file today's code writes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    PrivateAttr,
    ValidationError,
    model_serializer,
    model_validator,
)

from promptgen.errors import PromptgenError

__all__ = ["FileModel", "Number", "describe_errors", "dump", "refusal"]

# JSON numbers as they are written: an int stays an int and a float a float (60 vs 60.0 are other bytes)
Number = int | float


class FileModel(BaseModel):
    """Strict (no coercion: 1 is not true, "1" is not 1) and closed (an unknown key is an error)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    _key_order: tuple[str, ...] = PrivateAttr(default=())

    @model_validator(mode="wrap")
    @classmethod
    def _remember_key_order(cls, data: Any, handler: Any) -> Any:
        model = handler(data)
        if isinstance(data, dict):
            model._key_order = tuple(data)
        return model

    @model_serializer(mode="wrap")
    def _in_key_order(self, handler: Any) -> dict:
        out = handler(self)
        order = [key for key in self._key_order if key in out]
        return {**{key: out[key] for key in order}, **{key: value for key, value in out.items() if key not in order}}


def dump(model: BaseModel) -> Any:
    """The JSON data a model was read from (only the keys it was given, in their order)."""
    return model.model_dump(mode="json", exclude_unset=True, by_alias=True)


def _known_keys(model: type[BaseModel], loc: tuple) -> list[str]:
    """The keys allowed where `loc` points (a path of field names and list indices from `model`)."""
    current: type[BaseModel] | None = model
    for part in loc[:-1]:
        fields = current.model_fields if current is not None else {}
        field = next((f for name, f in fields.items() if (f.alias or name) == part), None)
        if field is not None:  # else a list index or a dict key: the same model goes on
            current = _inner_model(field.annotation)
    return [field.alias or name for name, field in current.model_fields.items()] if current is not None else []


def _inner_model(annotation: Any) -> type[BaseModel] | None:
    """The model inside `X | None`, `list[X]`, `dict[str, X]` (what a path can step into)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        inner = _inner_model(arg)
        if inner is not None:
            return inner
    return None


def _where(loc: tuple) -> str:
    return "".join(f"[{part}]" if isinstance(part, int) else (f".{part}" if i else str(part))
                   for i, part in enumerate(loc)) or "(top level)"


def describe_errors(exc: ValidationError, model: type[BaseModel], *, first_index_is: str | None = None,
                    index_base: list[int] | None = None, limit: int = 3) -> str:
    """The first few problems of a validation, each naming the key: unknown keys with the keys
    known there, missing keys, values of the wrong type. `first_index_is` names what a leading
    list index counts (e.g. "line"), `index_base` maps it to that number."""
    problems = []
    for error in exc.errors()[:limit]:
        loc = tuple(error["loc"])
        prefix = ""
        if first_index_is and loc and isinstance(loc[0], int):
            number = index_base[loc[0]] if index_base is not None else loc[0]
            prefix, loc = f"{first_index_is} {number}: ", loc[1:]
        if error["type"] == "extra_forbidden":
            known = _known_keys(model, loc)
            problems.append(f"{prefix}unknown key {_where(loc)!r}" + (f" (known keys: {', '.join(known)})" if known
                                                                        else ""))
        elif error["type"] == "missing":
            problems.append(f"{prefix}missing key {_where(loc)!r}")
        else:
            shown = repr(error.get("input"))
            shown = shown if len(shown) <= 60 else shown[:57] + "..."
            problems.append(f"{prefix}{_where(loc)}: {error['msg'].lower()} (got {shown})")
    more = len(exc.errors()) - len(problems)
    return "; ".join(problems) + (f"; and {more} more" if more > 0 else "")


def refusal(path: Path | str, what: str, exc: ValidationError, model: type[BaseModel], fix: str,
            **options: Any) -> PromptgenError:
    """The error for a file that does not fit its model: the file, each bad key, and the fix."""
    return PromptgenError(f"{path} is not a valid {what}: {describe_errors(exc, model, **options)}", fix)
