"""`promptgen run PIPELINE.toml`: the whole job, declared once, rerun cheaply.

A pipeline is datasets × steps. Each step is one promptgen command (describe, differentiate,
synonyms, import, rename, head, eval, audit, features) with its options written as they are on
the command line (`style = "cupl"`, `clip-model = "ViT-B-32"`, flags as `true`, repeatable options
as lists); `[defaults]` gives options to every step whose command takes them.

Every (dataset, step) unit is addressed by a key: the sha256 of its command, its options, the
dataset's class list, the content of what it reads (prompt-set versions by their records'
sha256, files by theirs, query templates by theirs) and nothing else. The key and the output are
kept in ROOT/pipelines/NAME.json; a rerun skips a unit whose key and output are unchanged, and a
unit whose input changed runs again, which changes the key of what reads it in turn. A unit that
was interrupted resumes its unfinished version (its paid answers are in the journal and cache).

References: a step's set options (`set`, `sets`, `against`, the sources of `build`) name sets; a
set another step writes is pinned to the version that step wrote. An option whose value is the
name of a step that writes a file (head, eval, rename, features, audit) becomes that file's path.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import click
from click import _utils as click_utils

from promptgen.classes import list_datasets
from promptgen.errors import ExitCode, PromptgenError
from promptgen.fileio import atomic_write_text, canonical_json, sha256_file
from promptgen.messages import shorten
from promptgen.redact import redact, redact_url
from promptgen.runlog import CommandRun
from promptgen.steps import STEPS, StepSpec, run_step_function
from promptgen.store import SetRef, Store, check_name
from promptgen.templates import load_template

__all__ = ["Pipeline", "Step", "load_pipeline", "step_datasets", "PipelineRunner", "UnitPlan", "PipelineState"]


_BUILD_PARAM = re.compile(r",(?=\s*\w+\s*=)")  # a comma that starts key=value, not one inside a value
BUILD_FILE_PARAMS = ("initial", "rename", "zpe_pool")


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


def map_build(spec: str, pin: Callable[[str], str], file_ref: Callable[[Any, bool], Any]) -> str:
    """BUILDER[:SRC+SRC][,key=value...] with set sources pinned, step names made paths, and files
    (sources or values) keyed by content."""
    split = split_build(spec)
    head = split.builder
    if split.source_text:
        head += ":" + "+".join(str(file_ref(pin(s.strip()), False)) for s in split.sources)
    mapped = []
    for param in split.params:
        key, _, value = param.partition("=")
        mapped.append(f"{key}={file_ref(value.strip(), True)}" if key.strip() in BUILD_FILE_PARAMS else param)
    return ",".join([head, *mapped])


def key_of(identity: dict) -> str:
    return hashlib.sha256(canonical_json(identity).encode()).hexdigest()


def stored(value: Any) -> Any:
    """The identity as the state file keeps it (for the plan's "changed: ..."): every string with
    credentials in URLs and key-like values removed. The key is the hash of the identity as given."""
    if isinstance(value, dict):
        return {stored(k): stored(v) for k, v in value.items()}
    if isinstance(value, list):
        return [stored(v) for v in value]
    return shown(value) if isinstance(value, str) else value


def shown(text: str) -> str:
    """Text as it may be printed or kept: URLs without credentials, key-like values removed."""
    return redact(" ".join(redact_url(word) if "://" in word else word for word in text.split(" ")))


def content_identity(value: str, memo: dict) -> str | None:
    """A path's content as the key sees it: a file's sha256, a folder's listing (names, sizes,
    times); None for anything that is not a path. `memo` (one per runner) keeps files by (path,
    size, mtime) and folders by path, so an ImageNet folder is walked once per run."""
    path = Path(value).expanduser()
    try:
        if path.is_file():
            stat = path.stat()
            key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
            if key not in memo:
                memo[key] = sha256_file(path)
            return memo[key]
        if path.is_dir():
            key = ("folder", str(path.resolve()))
            if key not in memo:
                entries = []
                for item in sorted(path.rglob("*")):
                    stat = item.stat()
                    if item.is_file():
                        entries.append((str(item.relative_to(path)), stat.st_size, stat.st_mtime_ns))
                memo[key] = "listing:" + hashlib.sha256(canonical_json(entries).encode()).hexdigest()
            return memo[key]
    except OSError:
        pass
    return None


def changed(old: dict, new: dict) -> str:
    keys = []
    for key in sorted(set(old) | set(new)):
        if key in ("options", "inputs"):
            label = "option" if key == "options" else "input"
            keys += [f"{label} {k}" for k in sorted(set(old.get(key) or {}) | set(new.get(key) or {}))
                     if (old.get(key) or {}).get(k) != (new.get(key) or {}).get(k)]
        elif old.get(key) != new.get(key):
            keys.append(key.replace("set:", "input set ").replace("file:", "input "))
    return ", ".join(keys) or "settings"


# options the pipeline sets itself
MANAGED = {"root", "output", "resume", "resume-version", "json", "dry-run"}


def spec_of(command: str) -> StepSpec:
    return STEPS[command]


@dataclass
class Step:
    name: str
    command: str
    options: dict[str, Any]
    datasets: list[str] | None = None


@dataclass
class Pipeline:
    name: str
    path: Path
    datasets: list[str]
    steps: list[Step]
    defaults: dict[str, Any] = field(default_factory=dict)


def _load_toml(path: Path) -> dict:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise PromptgenError(f"pipeline file {path} does not exist", "give the path of a .toml file "
                             "(see examples/ in the promptgen repository)") from None
    except tomllib.TOMLDecodeError as exc:
        raise PromptgenError(f"{path} is not valid TOML: {exc}", "fix the line it names") from None


def _option_key(key: str) -> str:
    return key.replace("_", "-")


def _parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise PromptgenError(f"--override {text!r} is not KEY=VALUE",
                             "e.g. --override defaults.clip-model=promptgen-tiny or --override steps.cupl.style=dclip")
    key, raw = text.split("=", 1)
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    return key.strip().split("."), value


def load_pipeline(path: Path, overrides: tuple[str, ...] = ()) -> Pipeline:
    """Read and check a pipeline file (names, commands, options) before anything runs."""
    data = _load_toml(path)
    file_datasets = data.get("datasets")
    for text in overrides:
        keys, value = _parse_override(text)
        _apply_override(data, keys, value, text)
    unknown = sorted(set(data) - {"name", "datasets", "defaults", "steps"})
    if unknown:
        raise PromptgenError(f"{path}: unknown top-level key(s) {', '.join(unknown)}",
                             "a pipeline has name, datasets, [defaults] and [[steps]]")
    name = str(data.get("name") or path.stem)
    check_name("pipeline", name)
    datasets = _dataset_list(data.get("datasets"), path)
    declared = _dataset_list(file_datasets, path) if file_datasets is not None else datasets
    defaults = {_option_key(k): v for k, v in (data.get("defaults") or {}).items()}
    steps_data = data.get("steps")
    if not isinstance(steps_data, list) or not steps_data:
        raise PromptgenError(f"{path}: no [[steps]]", 'add at least one, e.g.\n[[steps]]\ncommand = "describe"\n'
                             'source = "wordnet"')
    steps: list[Step] = []
    for number, raw in enumerate(steps_data, 1):
        if not isinstance(raw, dict) or "command" not in raw:
            raise PromptgenError(f"{path}: step {number} has no `command`",
                                 f"give one of: {', '.join(STEPS)}")
        command = raw["command"]
        if command not in STEPS:
            raise PromptgenError(f"{path}: step {number} has unknown command {command!r}",
                                 f"use one of: {', '.join(STEPS)}")
        step_name = str(raw.get("name") or command)
        check_name("step", step_name)
        if any(s.name == step_name for s in steps):
            raise PromptgenError(f"{path}: two steps are named {step_name!r}", "give each step a unique `name`")
        only = raw.get("datasets")
        if isinstance(only, str):
            only = [only]
        if only is not None and not set(only) <= set(declared):
            raise PromptgenError(f"{path}: step {step_name!r} names datasets the pipeline lacks: "
                                 f"{', '.join(sorted(set(only) - set(declared)))}", "add them to the top-level `datasets`")
        if only is not None:  # --override datasets=... narrows what the step runs on
            only = [d for d in only if d in datasets]
        options = {_option_key(k): v for k, v in raw.items() if k not in ("name", "command", "datasets")}
        managed = sorted(MANAGED & set(options))
        if managed:
            raise PromptgenError(f"{path}: step {step_name!r} sets {', '.join(managed)}, which the pipeline manages",
                                 "drop them: outputs go under ROOT/pipelines/NAME/, interrupted steps resume by "
                                 "themselves and --root is given to `promptgen run`")
        steps.append(Step(step_name, command, options, only))
    taken = {key for step in steps for key in spec_of(step.command).params}
    unused = sorted(k for k in defaults if k not in taken or k in MANAGED)
    if unused:  # a typo such as api-bse would otherwise send requests to the provider's default
        valid = sorted({k for k in taken if k not in MANAGED and k not in ("dataset", "help", "file")})
        raise PromptgenError(f"{path}: [defaults] sets {', '.join(unused)}, which none of the steps' commands take",
                             f"check the spelling; these steps take: {', '.join(valid)}")
    pipeline = Pipeline(name, path, list(datasets), [s for s in steps if s.datasets != []], defaults)
    file_steps = {s.name for s in pipeline.steps if spec_of(s.command).writes != "set"}
    for step in pipeline.steps:  # unknown options and bad values are errors now, not after an hour of work
        _check_parses(step, (step.datasets or pipeline.datasets)[0], command_options(step, defaults), file_steps)
    _check_references(pipeline)
    return pipeline


def _dataset_list(value: Any, path: Path) -> list[str]:
    if value == "all":
        return list_datasets()
    if isinstance(value, str):
        value = [value]
    if not value or not isinstance(value, list) or not all(isinstance(d, str) for d in value):
        raise PromptgenError(f"{path}: `datasets` must list dataset names (or be \"all\")",
                             'e.g. datasets = ["cifar10", "cifar100"]')
    return value


def step_datasets(pipeline: Pipeline, step: Step) -> list[str]:
    return [d for d in pipeline.datasets if step.datasets is None or d in step.datasets]


def _check_references(pipeline: Pipeline) -> None:
    """A step reads only what earlier steps wrote (a later one has not run yet), on no dataset the
    writer skips; two steps must not write the same set (which one would a reader get?)."""
    writers: dict[str, Step] = {}  # set -> the step that writes it
    produced = {step.name: produced_set_name(step, command_options(step, pipeline.defaults))
                for step in pipeline.steps}
    for index, step in enumerate(pipeline.steps):
        options = command_options(step, pipeline.defaults)
        for _, name in _file_references(step, options, pipeline.steps):
            source = next(s for s in pipeline.steps if s.name == name)
            if pipeline.steps.index(source) > index:
                raise PromptgenError(f"step {step.name!r} reads the file of step {name!r}, which comes after it",
                                     f"move {step.name!r} below {name!r}")
            _check_covers(pipeline, step, source, f"the file of step {name!r}")
        for ref in _set_references(step, options):
            if "@" in ref:
                continue  # an explicit version: read as written
            ref_dataset, _, bare = ref.rpartition("/")
            later = [s for s in pipeline.steps[index:] if produced[s.name] == bare and s is not step]
            if bare in writers:
                if ref_dataset and ref_dataset in pipeline.datasets:
                    if ref_dataset not in step_datasets(pipeline, writers[bare]):
                        raise PromptgenError(f"step {step.name!r} reads {ref}, which step {writers[bare].name!r} "
                                             f"does not make", f"run {writers[bare].name!r} on {ref_dataset} too")
                elif not ref_dataset:
                    _check_covers(pipeline, step, writers[bare], f"set {bare!r}")
            elif later:
                raise PromptgenError(f"step {step.name!r} reads set {bare!r}, which step {later[0].name!r} writes "
                                     f"after it", f"move {step.name!r} below {later[0].name!r}")
        if produced[step.name] is not None:
            other = writers.get(produced[step.name])
            if other is not None and set(step_datasets(pipeline, other)) & set(step_datasets(pipeline, step)):
                raise PromptgenError(f"steps {other.name!r} and {step.name!r} both write set {produced[step.name]!r}",
                                     'give one of them another set name (set = "...")')
            writers[produced[step.name]] = step


def produced_set_name(step: Step, options: dict[str, Any], root: Path | None = None) -> str | None:
    """The set a set-writing step writes, named as its command names it."""
    if spec_of(step.command).writes != "set":
        return None
    if given_or_default(step, options, "set"):  # differentiate and synonyms name theirs by default
        return str(given_or_default(step, options, "set"))
    if step.command == "describe":
        if given_or_default(step, options, "source") == "wordnet":
            return "wordnet"
        style = str(given_or_default(step, options, "style"))
        try:
            return load_template(style, root).name
        except PromptgenError:
            if root is not None:
                raise
            return style.partition("@")[0]  # a template in ROOT: checked when the runner has the root
    return "differential" if options.get("format") == "fudd" else str(options.get("format"))  # import


def given_or_default(step: Step, options: dict[str, Any], key: str) -> Any:
    """An option's value as the step's command will see it: given, else the command's own default."""
    value = options.get(key)
    # to_info_dict, not .default: click 8.2+ keeps "no default" as a sentinel there, shown as None here
    return value if value is not None else spec_of(step.command).params[key].to_info_dict().get("default")


def _file_references(step: Step, options: dict[str, Any], steps: list[Step]) -> list[tuple[str, str]]:
    """(option, step name) for every path option (or build file option) that names a file step."""
    file_steps = {s.name for s in steps if spec_of(s.command).writes != "set" and s is not step}
    params = spec_of(step.command).params
    found = []
    for key, value in options.items():
        for item in value if isinstance(value, list) else [value]:
            if not isinstance(item, str):
                continue
            if isinstance(params[key].type, click.Path) and item in file_steps:
                found.append((key, item))
            elif key == "build":
                for name, given in split_build(item).pairs():
                    if name in BUILD_FILE_PARAMS and given in file_steps:
                        found.append((key, given))
    return found


def _set_references(step: Step, options: dict[str, Any]) -> list[str]:
    """The set references a step's options make, as written."""
    refs = []
    for key in spec_of(step.command).set_inputs:
        for item in options.get(key, []) if isinstance(options.get(key), list) else [options.get(key)]:
            if not isinstance(item, str):
                continue
            if key == "build":
                refs += [s.strip() for s in split_build(item).sources if s.strip()]
            else:
                refs += [part.strip() for part in item.split(",") if part.strip()]
    return refs


def _check_covers(pipeline: Pipeline, reader: Step, source: Step, what: str) -> None:
    missing = sorted(set(step_datasets(pipeline, reader)) - set(step_datasets(pipeline, source)))
    if missing:
        raise PromptgenError(f"step {reader.name!r} reads {what}, which is not made for {', '.join(missing)}",
                             f"limit {reader.name!r} to the same datasets (datasets = [...]) or run "
                             f"{source.name!r} on them too")


def _check_parses(step: Step, dataset: str, options: dict[str, Any], file_steps: set[str]) -> None:
    """Convert the step's options as click will (types, choices, ranges), without running it.
    Values naming other steps' files are left out: those files do not exist yet."""
    def is_reference(value: Any) -> bool:
        return any(v in file_steps for v in (value if isinstance(value, list) else [value]) if isinstance(v, str))

    output = "placeholder" if spec_of(step.command).writes != "set" else None
    typed_values(step, dataset, {k: v for k, v in options.items() if not is_reference(v)}, output)


def _apply_override(data: dict, keys: list[str], value: Any, text: str) -> None:
    if keys[0] == "steps" and len(keys) == 3:
        matches = [s for s in data.get("steps") or [] if str(s.get("name") or s.get("command")) == keys[1]]
        if not matches:
            raise PromptgenError(f"--override {text}: no step named {keys[1]!r}", "use steps.STEP.OPTION=VALUE")
        matches[0][keys[2]] = value
    elif keys[0] == "defaults" and len(keys) == 2:
        data.setdefault("defaults", {})[keys[1]] = value
    elif len(keys) == 1 and keys[0] in ("name", "datasets"):
        data[keys[0]] = value.split(",") if keys[0] == "datasets" and isinstance(value, str) and value != "all" \
            else value
    else:
        raise PromptgenError(f"--override {text}: cannot set {'.'.join(keys)}",
                             "use name=..., datasets=a,b, defaults.OPTION=VALUE or steps.STEP.OPTION=VALUE")


def command_options(step: Step, defaults: dict[str, Any]) -> dict[str, Any]:
    """The step's options with the defaults its command takes; unknown options are an error."""
    params = spec_of(step.command).params
    unknown = sorted(k for k in step.options if k not in params or k == "dataset")
    if unknown:
        valid = sorted(k for k in params if k not in MANAGED and k != "dataset" and k != "help")
        raise PromptgenError(f"step {step.name!r} ({step.command}): unknown option(s) {', '.join(unknown)}",
                             f"`promptgen {step.command}` takes: {', '.join(valid)}")
    merged = {k: v for k, v in defaults.items() if k in params and k not in MANAGED and k != "dataset"}
    merged.update(step.options)
    return merged


def typed_values(step: Step, dataset: str, options: dict[str, Any], output: Path | str | None = None
                 ) -> dict[str, Any]:
    """The keyword arguments the step's command function takes, converted and checked by its
    click parameters (types, choices, ranges, defaults) as if typed at the prompt."""
    spec = spec_of(step.command)
    params = spec.params
    raw: dict[str, Any] = {}
    for param in spec.command.params:
        if isinstance(param, click.Argument):
            if param.name == "dataset":
                raw["dataset"] = dataset
            elif param.name in options:
                raw[param.name] = str(options[param.name])
            else:
                raise PromptgenError(f"step {step.name!r} ({step.command}) needs `{param.name}`",
                                     f"add {param.name} = ... to the step")
    for key, value in options.items():
        param = params[key]
        if isinstance(param, click.Argument) or value is None:  # --override KEY=null unsets an option
            continue
        if getattr(param, "is_flag", False):
            if not isinstance(value, bool):
                raise PromptgenError(f"step {step.name!r}: `{key}` is a flag and takes true or false, not {value!r}",
                                     f"write {key} = true")
            raw[param.name] = value
            continue
        items = [item if isinstance(item, str) else json.dumps(item) for item in
                 (value if isinstance(value, list) else [value])]
        raw[param.name] = items if param.multiple else items[-1]  # a repeated single option: the last wins
    if output is not None:
        raw["output"] = str(output)
    ctx = click.Context(spec.command, info_name=step.command)
    try:
        with ctx:
            for param in spec.command.get_params(ctx):
                param.handle_parse_result(ctx, raw, [])
    except click.ClickException as exc:
        raise PromptgenError(f"step {step.name!r} ({step.command}): {exc.format_message()}",
                             f"see `promptgen {step.command} --help`") from None
    # click keeps "not given" as a sentinel until its own parse ends (8.2+); the function sees None
    unset = getattr(click_utils, "UNSET", None)
    return {name: None if unset is not None and value is unset else value for name, value in ctx.params.items()}


STATE_FORMAT = 2
RESUMABLE = ("running", "interrupted", "partial", "failed")  # such a unit continues its own version


class PipelineState:
    """ROOT/pipelines/NAME.json, rewritten atomically after every change."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict = {"format": STATE_FORMAT, "units": {}}
        if path.exists():
            try:
                loaded = json.loads(path.read_text(encoding="utf-8"))
                if isinstance(loaded, dict) and loaded.get("format") == STATE_FORMAT and \
                        isinstance(loaded.get("units"), dict):
                    self.data = loaded
                else:
                    click.echo(f"warning: {path} is from another promptgen version; every step is checked "
                               f"again (answers come from the cache)", err=True)
            except ValueError:
                click.echo(f"warning: {path} is not readable JSON; every step runs again (answers come from "
                           f"the cache)", err=True)

    def unit(self, unit_id: str) -> dict:
        return self.data["units"].get(unit_id) or {}

    def update(self, unit_id: str, **values: Any) -> None:
        self.data["units"][unit_id] = {**self.unit(unit_id), **values}
        self.save()

    def replace(self, unit_id: str, values: dict) -> None:
        self.data["units"][unit_id] = values
        self.save()

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path, json.dumps(self.data, ensure_ascii=False, indent=1) + "\n", durable=True)


@dataclass
class UnitPlan:
    """What the runner will do (or did) with one (dataset, step)."""

    dataset: str
    step: Step
    action: str            # skip | run | resume | adopt | after | blocked
    reason: str
    key: str | None = None
    output: dict | None = None
    exit_code: int = 0
    options: dict | None = field(default=None, repr=False)   # resolved for the command line
    identity: dict | None = field(default=None, repr=False)  # what `key` hashes

    @property
    def id(self) -> str:
        return f"{self.dataset}/{self.step.name}"

    def to_json(self) -> dict:
        return {"unit": self.id, "dataset": self.dataset, "step": self.step.name, "command": self.step.command,
                "action": self.action, "reason": self.reason, "key": self.key, "output": self.output,
                "exit_code": self.exit_code}


class PipelineRunner:
    def __init__(self, pipeline: Pipeline, root: Path, *, force: bool = False,
                 echo: Callable[[str], None] = click.echo, log: CommandRun | None = None) -> None:
        self.pipeline = pipeline
        self.root = root
        self.store = Store(root)
        self.force = force
        self.echo = echo
        self.state = PipelineState(root / "pipelines" / f"{pipeline.name}.json")
        known = self.state.data.get("file")
        if known and known != str(pipeline.path.resolve()):
            echo(f"warning: pipeline {pipeline.name!r} was last run from {known}; its outputs are shared by name "
                 f"(give this file another `name` to keep them apart)")
        self.state.data["file"] = str(pipeline.path.resolve())
        self.out_dir = root / "pipelines" / pipeline.name
        self.log = log  # the pipeline's own run: each step's run is logged as its child
        self.results: dict[str, UnitPlan] = {}
        self._memo: dict = {}

    # which units, in order: a step for every dataset, then the next step (so a step can read an
    # earlier step's output on any dataset, DATASET/SET included)
    def units(self) -> list[tuple[str, Step]]:
        return [(dataset, step) for step in self.pipeline.steps for dataset in step_datasets(self.pipeline, step)]

    def produced_set(self, step: Step, options: dict[str, Any]) -> str | None:
        return produced_set_name(step, options, self.root)

    def output_path(self, dataset: str, step: Step) -> Path | None:
        kind = spec_of(step.command).writes
        if kind == "set":
            return None
        suffix = kind.split(":", 1)[1] if kind.startswith("file:") else ""
        return self.out_dir / dataset / f"{step.name}{suffix}"

    # -- keys ------------------------------------------------------------------------------------

    def _resolve(self, dataset: str, step: Step) -> tuple[dict[str, Any], dict[str, Any]]:
        """(options with references made concrete, what the key hashes). Raises _Waiting when an
        input is a unit that has not finished."""
        options = command_options(step, self.pipeline.defaults)
        inputs: dict[str, Any] = {}  # one entry per reference as written: two refs never share a slot
        producers: dict[tuple[str, str], Step] = {}  # (dataset, set) -> the earlier step that writes it
        files: dict[str, Step] = {}
        for other in self.pipeline.steps[:self.pipeline.steps.index(step)]:
            produced = self.produced_set(other, command_options(other, self.pipeline.defaults))
            for other_dataset in step_datasets(self.pipeline, other):
                if produced:
                    producers[(other_dataset, produced)] = other
                elif other_dataset == dataset:
                    files[other.name] = other

        def pin(where: str, name: str) -> str:
            """A set reference -> SET@vN (or DS/SET@vN) of the version the pipeline wrote or the store
            holds now; the content's sha256 goes into the key."""
            bare = name.partition("@")[0]
            ref_dataset, _, bare_set = bare.rpartition("/")
            producer = producers.get((ref_dataset or dataset, bare_set))
            if producer is not None and "@" not in name:
                output = self._upstream_output(f"{ref_dataset or dataset}/{producer.name}")
                inputs[f"{where} {name}"] = output["records_sha256"]
                return output["set"] if ref_dataset else output["set"].split("/", 1)[1]
            try:
                info = self.store.resolve(SetRef.parse(name, None if ref_dataset else dataset))
            except PromptgenError:
                return name  # not a set (a template name, a file): the command judges it
            inputs[f"{where} {name}"] = info.manifest.get("records_sha256")
            return str(info.ref) if ref_dataset else f"{info.set}@v{info.version}"

        def file_ref(where: str, value: Any, names_steps: bool = True) -> Any:
            """A step name -> the path of the file that step wrote (in options that take a path);
            a file or folder -> itself, keyed by content."""
            if not isinstance(value, str):
                return value
            if names_steps and value in files:
                output = self._upstream_output(f"{dataset}/{files[value].name}")
                inputs[f"{where} {value}"] = output["sha256"]
                return output["path"]
            content = content_identity(value, self._memo)
            if content is not None:
                inputs[f"{where} {value}"] = content
            return value

        resolved: dict[str, Any] = {}
        spec = spec_of(step.command)
        params, set_options = spec.params, spec.set_inputs
        for key, value in options.items():
            values = value if isinstance(value, list) else [value]
            if key == "build" and key in set_options:
                values = [map_build(str(v), lambda n: pin("build", n), lambda x, steps: file_ref("build", x, steps))
                          for v in values]
            elif key in set_options:
                values = [",".join(pin(key, part.strip()) for part in str(v).split(",")) for v in values]
            elif isinstance(params[key].type, click.Path):
                values = [file_ref(key, v) for v in values]
            elif key in spec.path_like:  # --templates FILE.json, --images DIR or CSV: keyed by content too
                values = [file_ref(key, v, False) for v in values]
            resolved[key] = values if isinstance(value, list) else values[0]
        if step.command == "audit" and "sets" not in options:
            # it audits the latest complete version of every set of the dataset: each is an input
            for set_name in sorted({s for d, s in producers if d == dataset} | set(self._existing_sets(dataset))):
                pin("every set", set_name)
        shared_classes = self._classes_file(dataset)
        if "classes" in params and not resolved.get("classes") and shared_classes:
            resolved["classes"] = shared_classes  # one step names a dataset's class file for all
        classes = self.store.classes(dataset, resolved.get("classes"))
        identity = {"command": step.command, "dataset": dataset, "classes": classes.hash,
                    "options": {k: v for k, v in sorted(options.items()) if k not in spec.run_only}, "inputs": inputs}
        template = self._template_identity(step, resolved)
        if template:
            identity["template"] = template
        return resolved, identity

    def _existing_sets(self, dataset: str) -> list[str]:
        try:
            return self.store.list_sets(dataset)
        except PromptgenError:
            return []

    def _upstream_output(self, unit: str) -> dict:
        """The output of a unit this one reads, once it has one in this run (or kept from before)."""
        result = self.results.get(unit)
        if result is None or result.exit_code or not result.output:
            raise _Waiting(unit)
        return result.output

    def _classes_file(self, dataset: str) -> str | None:
        """A class-list file some step gives for the dataset (later steps need not repeat it)."""
        for step in self.pipeline.steps:
            if dataset in step_datasets(self.pipeline, step):
                given = command_options(step, self.pipeline.defaults).get("classes")
                if given:
                    return str(given)
        return None

    def _template_identity(self, step: Step, options: dict[str, Any]) -> str | None:
        """The query template's sha256, so that editing a template reruns what asked it."""
        if step.command == "rename":
            return load_template("name-commonness", self.root).sha256 if options.get("scorer") == "llm" else None
        if step.command not in ("describe", "differentiate", "synonyms"):
            return None
        if "source" in spec_of(step.command).params and given_or_default(step, options, "source") == "wordnet":
            return None
        return load_template(str(given_or_default(step, options, "style")), self.root).sha256

    # -- planning --------------------------------------------------------------------------------

    def plan_unit(self, dataset: str, step: Step) -> UnitPlan:
        """What to do with one unit now, with the options and identity it was resolved to."""
        try:
            options, identity = self._resolve(dataset, step)
        except _Waiting as waiting:
            upstream = self.results.get(waiting.unit)
            if upstream is not None and (upstream.action == "blocked" or upstream.exit_code):
                return UnitPlan(dataset, step, "blocked", f"{waiting.unit} did not finish")
            return UnitPlan(dataset, step, "after", f"runs if {waiting.unit} changes its output")
        key = key_of(identity)
        action, reason, output = self._decide(dataset, step, key, identity)
        return UnitPlan(dataset, step, action, reason, key, output, options=options, identity=identity)

    def _decide(self, dataset: str, step: Step, key: str, identity: dict) -> tuple[str, str, dict | None]:
        saved = self.state.unit(f"{dataset}/{step.name}")
        if self.force:
            return "run", "--force", None
        if not saved:
            return "run", "new", None
        if saved.get("key") != key:
            return "run", f"changed: {changed(saved.get('identity') or {}, stored(identity))}", None
        if saved.get("status") == "done":
            problem = self._output_problem(saved.get("output") or {})
            return ("run", problem, None) if problem else ("skip", "unchanged", saved["output"])
        own = self._own_version(dataset, saved)
        if own is not None and own.status == "complete":
            return "adopt", f"v{own.version}, complete, was written by the last run", None
        if own is not None and "resume" in spec_of(step.command).params:
            return "resume", f"{saved.get('status')}: continue v{own.version}", None
        return "run", f"last run {saved.get('status', 'unknown')}", None

    def _output_problem(self, output: dict) -> str | None:
        if "set" in output:
            try:
                info = self.store.resolve(SetRef.parse(output["set"]))
            except PromptgenError:
                return f"{output['set']} is gone"
            if info.manifest.get("records_sha256") != output.get("records_sha256") or info.status != "complete":
                return f"{output['set']} changed"
            return None
        path = Path(output.get("path", ""))
        sha_path = path / "audit.json" if path.is_dir() else path
        if not sha_path.is_file() or sha256_file(sha_path) != output.get("sha256"):
            return f"{path} is missing or changed"
        return None

    def _own_version(self, dataset: str, saved: dict) -> Any:
        """The version this unit's last run reserved (recorded the moment the store reserved it), if
        that run did not finish the unit: it is continued (or, when complete, taken as the output),
        and a version anyone else made is never mistaken for it."""
        if saved.get("status") not in RESUMABLE or not saved.get("set_name") or not saved.get("version"):
            return None
        for info in self._set_versions(dataset, saved["set_name"]):
            if info.version == saved["version"]:
                return info
        return None

    def _set_versions(self, dataset: str, set_name: str) -> list:
        try:
            return self.store.list_versions(dataset, set_name)
        except PromptgenError:
            return []

    def plan(self) -> list[UnitPlan]:
        """What `run` would do, without running anything. Every unit's options, references,
        templates and class list are resolved, so a mistake anywhere stops before anything runs."""
        self.results = {}
        for dataset in self.pipeline.datasets:
            self.store.classes(dataset, self._classes_file(dataset))  # an unknown dataset fails here
        plans = []
        for dataset, step in self.units():
            plan = self.plan_unit(dataset, step)
            self.results[plan.id] = plan
            plans.append(plan)
        return plans

    # -- running ---------------------------------------------------------------------------------

    def run(self) -> tuple[list[UnitPlan], int]:
        """Run every unit that needs it, in order; a failed unit blocks what reads it, not the rest."""
        lock = _PipelineLock(self.root / "pipelines" / f".{self.pipeline.name}.lock", self.pipeline.name)
        with lock:
            self.plan()  # raises on any mistake in the file before the first unit runs
            self.results = {}
            done: list[UnitPlan] = []
            exit_code = 0
            for dataset, step in self.units():
                plan = self._run_unit(dataset, step)
                self.results[plan.id] = plan
                done.append(plan)
                if plan.exit_code == ExitCode.INTERRUPTED:
                    return done, plan.exit_code
                exit_code = exit_code or plan.exit_code
            return done, exit_code

    def _run_unit(self, dataset: str, step: Step) -> UnitPlan:
        try:
            plan = self.plan_unit(dataset, step)
        except PromptgenError as exc:  # e.g. an input set that became unreadable meanwhile
            message = shown(exc.message)
            self.echo(f"   {dataset}/{step.name}: error: {message}")
            return UnitPlan(dataset, step, "run", f"error: {message}", exit_code=ExitCode.USAGE)
        if plan.action == "blocked":
            self.echo(f"   {plan.id}: blocked ({plan.reason})")
            return plan
        if plan.action == "skip":
            self.echo(f"   {plan.id}: unchanged, skipped")
            return plan
        self.echo(f"== {plan.id}: {plan.reason}")
        return self._execute(dataset, step, plan)

    def _execute(self, dataset: str, step: Step, plan: UnitPlan) -> UnitPlan:
        options, identity = dict(plan.options), plan.identity
        unit_id = plan.id
        saved = self.state.unit(unit_id)
        set_name = self.produced_set(step, options)
        output_path = self.output_path(dataset, step)
        entry = {"key": plan.key, "status": "running", "started": _now(), "identity": stored(identity)}
        if set_name is not None:
            own = self._own_version(dataset, saved) if plan.action in ("adopt", "resume") else None
            if plan.action == "adopt":
                output = {"set": str(own.ref), "records_sha256": own.manifest.get("records_sha256")}
                self.echo(f"   {own.ref}, complete, was written by the last run: kept")
                return self._finish(plan, identity, output, 0)
            if plan.action == "resume":
                options.update({"resume": True, "resume-version": own.version})
                entry["version"] = own.version
            entry["set_name"] = set_name
        else:
            output_path.parent.mkdir(parents=True, exist_ok=True)
        self.state.replace(unit_id, entry)

        def reserved(info: Any) -> None:
            if info.dataset == dataset and info.set == set_name:
                self.state.update(unit_id, version=info.version)

        shown_line = shown(command_line(step.command, dataset, options, output_path))
        self.echo("   " + shown_line)
        started = time.time()
        values = typed_values(step, dataset, options, output_path)
        run = CommandRun(self.root, step.command, args=shorten(shown_line, 500, one_line=False), dataset=dataset,
                         parent=self.log, on_reserved=reserved)
        code = run_step_function(spec_of(step.command).command, values, run)
        written = run.outputs
        if code == ExitCode.INTERRUPTED:
            self.state.update(unit_id, status="interrupted")
            return UnitPlan(dataset, step, plan.action, "interrupted", plan.key, None, code)
        if set_name is not None:
            finished = [w for w in written if w["dataset"] == dataset and w["set"] == set_name]
            if code == 0 and finished and finished[-1]["status"] == "complete":
                info = finished[-1]
                output = {"set": info["ref"], "records_sha256": info["records_sha256"]}
                batches = [b for w in finished for b in w.get("batches") or []]
                return self._finish(plan, identity, output, code, time.time() - started,
                                    {"batches": list(dict.fromkeys(batches))} if batches else {})
        elif code == 0 and output_path.exists():
            sha_path = output_path / "audit.json" if output_path.is_dir() else output_path
            output = {"path": str(output_path), "sha256": sha256_file(sha_path)}
            return self._finish(plan, identity, output, code, time.time() - started)
        code = code or 1
        status = "partial" if code == ExitCode.PARTIAL else "failed"
        self.state.update(unit_id, status=status, exit_code=code, finished=_now())
        self.echo(f"   {unit_id} {status} (exit {code}); rerun the pipeline to retry it")
        return UnitPlan(dataset, step, plan.action, status, plan.key, None, code)

    def _finish(self, plan: UnitPlan, identity: dict, output: dict, code: int, seconds: float = 0.0,
                extra: dict | None = None) -> UnitPlan:
        self.state.replace(plan.id, {"key": plan.key, "status": "done", "output": output, "finished": _now(),
                                     "seconds": round(seconds, 3), "identity": stored(identity), **(extra or {})})
        return UnitPlan(plan.dataset, plan.step, plan.action, plan.reason, plan.key, output, code)


class _Waiting(Exception):
    def __init__(self, unit: str) -> None:
        super().__init__(unit)
        self.unit = unit


class _PipelineLock:
    """One run of a pipeline at a time (its state file has one writer)."""

    def __init__(self, path: Path, name: str) -> None:
        self.path, self.name = path, name
        self.handle: Any = None

    def __enter__(self) -> "_PipelineLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.handle = open(self.path, "a+")
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.handle.seek(0)
            holder = self.handle.read().strip() or "another process"
            self.handle.close()
            raise PromptgenError(f"pipeline {self.name!r} is being run by {holder}",
                                 "wait for it to finish (its finished steps will then be skipped), or stop it") from None
        self.handle.seek(0)
        self.handle.truncate()
        self.handle.write(f"pid {os.getpid()}")
        self.handle.flush()
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(OSError):
            fcntl.flock(self.handle, fcntl.LOCK_UN)
        self.handle.close()


def command_line(command: str, dataset: str, options: dict[str, Any], output: Path | None) -> str:
    """The command a step runs, as one would type it: shown and logged, never parsed."""
    words = ["promptgen", command, dataset]
    for key, value in {**options, **({"output": str(output)} if output else {})}.items():
        for item in value if isinstance(value, list) else [value]:
            if item is None or item is False:
                continue
            words += ["--" + key] if item is True else ["--" + key, item if isinstance(item, str) else str(item)]
    return " ".join(shlex.quote(word) for word in words)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
