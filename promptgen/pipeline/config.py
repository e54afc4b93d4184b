"""A pipeline file: its datasets, defaults and steps, checked before anything runs.

Every option is checked against the command's own declaration (`promptgen.steps`): unknown
options, values click would refuse, references to steps that come later or make other datasets,
and two steps writing one set are all errors here, not an hour into a run.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
from click import _utils as click_utils

from promptgen.classes import list_datasets
from promptgen.errors import PromptgenError
from promptgen.formats import IMPORT_FORMATS
from promptgen.build_spec import split_build
from promptgen.pipeline.keys import BUILD_FILE_PARAMS
from promptgen.steps import STEPS, StepSpec
from promptgen.store import check_name
from promptgen.templates import load_template

__all__ = ["Step", "Pipeline", "load_pipeline", "step_datasets", "spec_of", "command_options", "typed_values",
           "produced_set_name", "given_or_default", "MANAGED"]

# options the pipeline sets itself
MANAGED = {"root", "output", "resume", "resume-version", "json", "dry-run"}


def spec_of(command: str) -> StepSpec:
    if not STEPS:  # the commands register when promptgen.cli is imported
        raise PromptgenError("no pipeline step command is registered",
                             "import promptgen.cli before running a pipeline from Python (the promptgen command does)")
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
        if STEPS and command not in STEPS:  # none registered: spec_of says what to import
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
    fmt = str(options.get("format"))  # import: the set its format writes by default
    return IMPORT_FORMATS[fmt]["set"] if fmt in IMPORT_FORMATS else fmt


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
