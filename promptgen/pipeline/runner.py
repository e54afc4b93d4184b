"""The pipeline runner: each (dataset, step) unit is planned from its key, then skipped,
adopted, resumed or run, by calling the step's command function with typed values; the run log
line of each step is written here, as a child of the pipeline's own run."""

from __future__ import annotations

import contextlib
import os
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import click

from promptgen.clock import utc_now
from promptgen.errors import ExitCode, PromptgenError
from promptgen.fileio import sha256_file
from promptgen.locks import LockFile
from promptgen.messages import shorten
from promptgen.pipeline.config import (Pipeline, Step, command_options, given_or_default, produced_set_name,
                                       spec_of, step_datasets, typed_values)
from promptgen.pipeline.keys import changed, content_identity, key_of, map_build, shown, stored
from promptgen.pipeline.state import RESUMABLE, PipelineState
from promptgen.runlog import CommandRun
from promptgen.steps import run_step_function
from promptgen.store import SetRef, Store
from promptgen.templates import load_template

__all__ = ["PipelineRunner", "UnitPlan"]


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

    def output_path(self, dataset: str, step: Step, options: dict[str, Any] | None = None) -> Path | None:
        spec = spec_of(step.command)
        if spec.writes == "set":
            return None
        suffix = spec.writes.split(":", 1)[1] if spec.writes.startswith("file:") else ""
        chosen = (options or {}).get(spec.suffix_from) if spec.suffix_from else None
        if chosen:  # e.g. head's format = "safetensors"
            suffix = f".{chosen}"
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
        output_path = self.output_path(dataset, step, options)
        entry = {"key": plan.key, "status": "running", "started": utc_now(), "identity": stored(identity)}
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
        self.state.update(unit_id, status=status, exit_code=code, finished=utc_now())
        self.echo(f"   {unit_id} {status} (exit {code}); rerun the pipeline to retry it")
        return UnitPlan(dataset, step, plan.action, status, plan.key, None, code)

    def _finish(self, plan: UnitPlan, identity: dict, output: dict, code: int, seconds: float = 0.0,
                extra: dict | None = None) -> UnitPlan:
        self.state.replace(plan.id, {"key": plan.key, "status": "done", "output": output, "finished": utc_now(),
                                     "seconds": round(seconds, 3), "identity": stored(identity), **(extra or {})})
        return UnitPlan(plan.dataset, plan.step, plan.action, plan.reason, plan.key, output, code)


class _Waiting(Exception):
    def __init__(self, unit: str) -> None:
        super().__init__(unit)
        self.unit = unit


class _PipelineLock:
    """One run of a pipeline at a time (its state file has one writer); its note is "pid N"."""

    def __init__(self, path: Path, name: str) -> None:
        self.path, self.name = path, name
        self.lock: LockFile | None = None

    def __enter__(self) -> "_PipelineLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock = LockFile(self.path)
        if not lock.try_acquire():
            holder = lock.read_note().strip() or "another process"
            lock.release()
            raise PromptgenError(f"pipeline {self.name!r} is being run by {holder}",
                                 "wait for it to finish (its finished steps will then be skipped), or stop it")
        lock.write_note(f"pid {os.getpid()}")
        self.lock = lock
        return self

    def __exit__(self, *exc: object) -> None:
        if self.lock is not None:
            lock, self.lock = self.lock, None
            with contextlib.suppress(OSError):  # the lock goes with the process anyway; the run's result stands
                lock.release()


def command_line(command: str, dataset: str, options: dict[str, Any], output: Path | None) -> str:
    """The command a step runs, as one would type it: shown and logged, never parsed."""
    words = ["promptgen", command, dataset]
    for key, value in {**options, **({"output": str(output)} if output else {})}.items():
        for item in value if isinstance(value, list) else [value]:
            if item is None or item is False:
                continue
            words += ["--" + key] if item is True else ["--" + key, item if isinstance(item, str) else str(item)]
    return " ".join(shlex.quote(word) for word in words)


