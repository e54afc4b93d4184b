"""LLM query templates, kept as data in `prompts/templates/<name>.v<N>.json`.

A template names its questions, the sampling parameters, and how answers are parsed. A
"class" template (describe) asks about one class: `{c}` is the class name and `{a}`/`{A}` its
indefinite article ("a"/"an", "A"/"An"). A "pair" template (differentiate) asks about two
classes: `{c1}`, `{c2}`, `{a1}`, `{a2}`, `{A1}`, `{A2}`; it also carries the JSON schema of the
answer and the `repair` message sent once when an answer is not valid JSON. A user adds a file to
`<root>/prompts/templates/` and selects it by name (`--style NAME` or `NAME@vN`) or passes a path
to a JSON file.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from promptgen.errors import PromptgenError
from promptgen.paths import BUILTIN_PROMPTS_DIR, user_templates_dir

__all__ = ["Question", "QueryTemplate", "load_template", "list_templates", "indefinite_article",
           "name_for_prompt", "PARSERS"]

PARSERS = ("sentence", "bullets", "list", "pair-json")
KINDS = ("class", "pair")
_FILE = re.compile(r"^(?P<name>[a-z0-9][a-z0-9_-]*)\.v(?P<version>\d+)\.json$")
_PLACEHOLDER = re.compile(r"\{(\w*)\}")
ALLOWED_PLACEHOLDERS = {"c", "a", "A"}
PAIR_PLACEHOLDERS = {"c1", "c2", "a1", "a2", "A1", "A2"}


@dataclass(frozen=True)
class Question:
    id: str
    text: str


@dataclass(frozen=True)
class QueryTemplate:
    name: str
    version: int
    questions: tuple[Question, ...]
    sampling: dict
    parser: str = "sentence"
    system: str | None = None
    append: str = ""
    max_chars: int = 300
    description: str = ""
    citation: str = ""
    text_kind: str = "sentence"
    path: Path | None = field(default=None, compare=False)
    sha256: str = ""
    kind: str = "class"
    schema: dict | None = field(default=None, compare=False)
    repair: str | None = None
    placeholders: tuple[str, ...] = ()     # extra placeholders the caller fills (e.g. {names})

    @property
    def ref(self) -> str:
        return f"{self.name}@v{self.version}"

    @property
    def n(self) -> int:
        return int(self.sampling.get("n", 1))

    def question_id(self, question: Question) -> str:
        return f"{self.ref}/{question.id}"

    def render(self, question: Question, class_name: str, extra: dict[str, str] | None = None) -> list[dict]:
        """Chat messages asking `question` about `class_name`; the name can never add instructions.
        `extra` fills the template's own placeholders."""
        shown = name_for_prompt(class_name)
        article = indefinite_article(shown)
        missing = set(self.placeholders) - set(extra or {})
        if missing:
            raise PromptgenError(f"template {self.ref} needs {', '.join(sorted(missing))}", "pass them in extra")
        values = {"c": shown, "a": article, "A": article.capitalize(), **(extra or {})}
        text = _PLACEHOLDER.sub(lambda m: values[m.group(1)], question.text)
        messages = [{"role": "system", "content": self.system}] if self.system else []
        return messages + [{"role": "user", "content": text}]

    def render_pair(self, question: Question, first: str, second: str) -> list[dict]:
        """Chat messages asking `question` about two classes (a pair template)."""
        values = {}
        for number, class_name in (("1", first), ("2", second)):
            shown = name_for_prompt(class_name)
            article = indefinite_article(shown)
            values.update({"c" + number: shown, "a" + number: article, "A" + number: article.capitalize()})
        text = _PLACEHOLDER.sub(lambda m: values[m.group(1)], question.text)
        messages = [{"role": "system", "content": self.system}] if self.system else []
        return messages + [{"role": "user", "content": text}]

    def manifest_entry(self) -> dict:
        return {"name": self.name, "version": self.version, "ref": self.ref, "sha256": self.sha256, "kind": self.kind,
                "questions": [q.id for q in self.questions], "parser": self.parser,
                "path": str(self.path) if self.path else None}


# Words whose first letter misleads: a silent "h" ("an hour") or a "yoo"/"w" sound ("a unicorn").
_AN_PREFIXES = ("hour", "honest", "honor", "honour", "heir", "herb")
_A_PREFIXES = ("uni", "use", "usu", "ura", "ure", "uri", "uro", "uti", "uto", "uku", "ubiq",
               "eu", "ewe", "one", "once")
_AN_DESPITE_A_PREFIX = ("unim", "unin", "unid", "unint", "unis")
# Letters whose spoken name starts with a vowel sound, for acronyms and models ("an SUV", "an F-16").
_VOWEL_NAMED_LETTERS = set("AEFHILMNORSX")


def indefinite_article(phrase: str) -> str:
    """'a' or 'an' for a phrase, whatever its case: "an apple", "an Egyptian Mau", "an APPLE",
    "a MOUSE", "a unicorn", "an hour glass", "an SUV", "a T-shirt", "an 8-ball"."""
    word = re.split(r"[\s\-/,]", re.sub(r"^[\W_]+", "", phrase.strip()), maxsplit=1)[0]
    if not word:
        return "a"
    if word[0].isdigit():
        digits = re.match(r"\d+", word).group()
        return "an" if digits.startswith("8") or digits in ("11", "18") else "a"
    # spelled letter by letter: "X", "A300", "SUV", "MRI"; but "LEGO", "MOUSE" are read as words
    spelled_out = len(word) == 1 or (word[0].isupper() and word[1].isdigit()) or \
        (word.isupper() and word.isalpha() and (len(word) <= 3 or not re.search("[AEIOUY]", word)))
    if spelled_out:
        return "an" if word[0].upper() in _VOWEL_NAMED_LETTERS else "a"
    lower = word.lower()
    if lower.startswith(_AN_PREFIXES):
        return "an"
    if lower.startswith(_A_PREFIXES) and not lower.startswith(_AN_DESPITE_A_PREFIX):
        return "a"
    return "an" if lower[0] in "aeiou" else "a"


_LINE_BREAKING = re.compile(r"[^\S ]")  # whitespace other than a space: newlines, tabs, ...
# A plain name: words (letters, digits, ' & / + - _ inside), numbers like 16.4, short capitalised
# abbreviations like "St." or "Conv.", commas, and at most one short parenthetical at the end
# ("kite (bird of prey)"). Anything else, such as a sentence break, is quoted.
_WORD = r"(?:/|[A-Z][a-z]{0,3}\.|\d+(?:\.\d+)?|[^\W_][\w'&/+-]*),?"
_PLAIN_NAME = re.compile(rf"^{_WORD}(?: {_WORD})*(?: \({_WORD}(?: {_WORD}){{0,3}}\))?$")
_INSTRUCTION_WORDS = re.compile(
    r"\b(ignore|disregard|instruction|instructions|prompt|system|assistant|respond|reply|answer|output|"
    r"you are|pretend|forget|previous|above|below|then|instead|write|say|tell|print|repeat|translate)\b",
    re.IGNORECASE)


def name_for_prompt(class_name: str) -> str:
    """The class name as it goes into a prompt: verbatim when it is a plain name (every built-in
    name is), otherwise as one quoted JSON literal on one line, so that quotes, newlines, sentence
    breaks or instruction-like text in a name stay data inside the question."""
    one_line = " ".join(class_name.split())
    plain = (not _LINE_BREAKING.search(class_name) and _PLAIN_NAME.match(one_line)
             and not _INSTRUCTION_WORDS.search(one_line) and len(one_line.split()) <= 8)
    if plain:
        return one_line
    return json.dumps(one_line, ensure_ascii=False)


def _template_dirs(root: Path | None) -> list[Path]:
    dirs = []
    if root is not None:
        dirs.append(user_templates_dir(root))
    builtin = BUILTIN_PROMPTS_DIR / "templates"
    if builtin not in dirs:
        dirs.append(builtin)
    return dirs


def _scan(root: Path | None) -> dict[str, dict[int, Path]]:
    """name -> version -> path; a user's file shadows a built-in one of the same name and version."""
    found: dict[str, dict[int, Path]] = {}
    for directory in reversed(_template_dirs(root)):
        if not directory.is_dir():
            continue
        for path in sorted(directory.glob("*.json")):
            match = _FILE.match(path.name)
            if match:
                found.setdefault(match["name"], {})[int(match["version"])] = path
    return found


def list_templates(root: Path | None = None) -> list[QueryTemplate]:
    return [_read(path) for versions in sorted(_scan(root).items()) for _, path in sorted(versions[1].items())]


def load_template(spec: str, root: Path | None = None) -> QueryTemplate:
    """`spec` is a name (latest version), `name@vN`, or a path to a template JSON file."""
    if spec.endswith(".json") or "/" in spec or "\\" in spec:
        path = Path(spec)
        if not path.is_file():
            raise PromptgenError(f"template file {spec!r} does not exist", "check the path")
        return _read(path)
    name, _, version = spec.partition("@")
    versions = _scan(root).get(name)
    if not versions:
        known = ", ".join(sorted(_scan(root))) or "(none)"
        raise PromptgenError(f"unknown template {name!r}",
                             f"use one of: {known}; or add {name}.v1.json to {user_templates_dir(root or Path('.'))}")
    if version:
        number = int(version.lstrip("v")) if version.lstrip("v").isdigit() else -1
        if number not in versions:
            raise PromptgenError(f"template {name!r} has no version {version!r}",
                                 f"available: {', '.join(f'v{v}' for v in sorted(versions))}")
        return _read(versions[number])
    return _read(versions[max(versions)])


def _read(path: Path) -> QueryTemplate:
    raw = path.read_bytes()
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise PromptgenError(f"template {path} is not valid JSON ({exc})", "fix the file") from None
    from promptgen.template_files import check_template  # heavy: pydantic, kept out of start-up

    check_template(data, path)  # unknown keys, questions without id or text, values of the wrong type
    where = f"template {path}"
    match = _FILE.match(path.name)
    name = data.get("name") or (match["name"] if match else path.stem)
    version = int(data.get("version") or (match["version"] if match else 1))
    questions = tuple(Question(str(q["id"]), str(q["text"])) for q in data.get("questions", []))
    if not questions:
        raise PromptgenError(f"{where} has no questions", 'add "questions": [{"id": ..., "text": ...}]')
    if len({q.id for q in questions}) != len(questions):
        raise PromptgenError(f"{where} repeats a question id", "give every question its own id")
    kind = data.get("kind", "class")
    if kind not in KINDS:
        raise PromptgenError(f"{where}: unknown kind {kind!r}", f"use one of {', '.join(KINDS)}")
    placeholders = tuple(str(x) for x in data.get("placeholders", []))
    allowed, hint = ((ALLOWED_PLACEHOLDERS | set(placeholders), "use {c} for the class name and {a} or {A} for its article")
                     if kind == "class" else
                     (PAIR_PLACEHOLDERS, "use {c1} and {c2} for the two class names and {a1}/{a2} for their articles"))
    for q in questions:
        unknown = set(_PLACEHOLDER.findall(q.text)) - allowed
        if unknown:
            raise PromptgenError(f"{where}: question {q.id!r} uses unknown placeholder(s) "
                                 f"{', '.join('{' + u + '}' for u in sorted(unknown))}", hint)
        needed = ["{c}"] if kind == "class" else ["{c1}", "{c2}"]
        if not all(n in q.text for n in needed):
            raise PromptgenError(f"{where}: question {q.id!r} never names the class" + ("" if kind == "class" else "es"),
                                 f"put {' and '.join(needed)} in the question")
    parser = data.get("parser", "sentence" if kind == "class" else "pair-json")
    if parser not in PARSERS:
        raise PromptgenError(f"{where}: unknown parser {parser!r}", f"use one of {', '.join(PARSERS)}")
    if (parser == "pair-json") != (kind == "pair"):
        raise PromptgenError(f"{where}: parser {parser!r} does not fit a {kind} template",
                             "pair templates use the pair-json parser; class templates sentence or bullets")
    schema = data.get("schema")
    if schema is not None and not isinstance(schema, dict):
        raise PromptgenError(f"{where}: schema must be a JSON-schema object", 'e.g. "schema": {"type": "object", ...}')
    repair = data.get("repair")
    if repair is not None and (not isinstance(repair, str) or set(_PLACEHOLDER.findall(repair)) - {"error"}):
        raise PromptgenError(f"{where}: repair must be a text whose only placeholder is {{error}}",
                             'e.g. "repair": "That was not valid JSON ({error}). Reply with the JSON only."')
    sampling = dict(data.get("sampling", {}))
    if int(sampling.get("n", 1)) < 1:
        raise PromptgenError(f"{where}: sampling.n must be at least 1", "set n to 1 or more")
    return QueryTemplate(
        name=name, version=version, questions=questions, sampling=sampling, parser=parser,
        system=data.get("system"), append=data.get("append", ""), max_chars=int(data.get("max_chars", 300)),
        description=data.get("description", ""), citation=data.get("citation", ""),
        text_kind=data.get("text_kind", {"bullets": "descriptor", "list": "synonym"}.get(parser, "sentence")),
        path=path, sha256="sha256:" + hashlib.sha256(raw).hexdigest(), kind=kind, schema=schema, repair=repair,
        placeholders=placeholders,
    )
