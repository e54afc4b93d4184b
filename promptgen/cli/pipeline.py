"""`promptgen run PIPELINE.toml`: every stage for every dataset, skipping what has not changed."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import click

from promptgen.cli.common import emit_json, json_option, root_option
from promptgen.paths import resolve_root
from promptgen.runlog import CommandRun, logged

COMMANDS = []


@click.command("run")
@click.argument("pipeline_file", metavar="PIPELINE.toml", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--plan", "plan_only", is_flag=True, help="Print what would run, skip or resume, and stop.")
@click.option("--force", is_flag=True, help="Run every step again (answers still come from the cache).")
@click.option("--override", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Change the file's settings for this run: defaults.OPTION=V, steps.STEP.OPTION=V, "
                   "datasets=a,b, name=N; repeatable.")
@root_option
@json_option
@logged("run", aggregate=True, unless=lambda kwargs: kwargs.get("plan_only"))
def run_command(pipeline_file: Path, plan_only: bool, force: bool, overrides: tuple[str, ...], root: Path | None,
                as_json: bool, run: CommandRun) -> None:
    """Run the pipeline in PIPELINE.toml: datasets x steps (describe, differentiate, synonyms, import,
    rename, head, eval, audit, features). A step whose inputs did not change since the last run is
    skipped; one that was interrupted resumes; state is kept in ROOT/pipelines/NAME.json."""
    # local: the pipeline is to call the stages (LLM client, CLIP) directly, which start-up must not load
    from promptgen.pipeline import PipelineRunner, load_pipeline

    pipeline = load_pipeline(pipeline_file, overrides)
    root_path = resolve_root(root)
    # with --json, stdout carries one JSON document: the steps' own output goes to stderr
    echo = (lambda line: click.echo(line, err=True)) if as_json else click.echo
    runner = PipelineRunner(pipeline, root_path, force=force, echo=echo, log=run)
    if plan_only:
        plans = runner.plan()
        if as_json:
            emit_json({"pipeline": pipeline.name, "state": str(runner.state.path), "units": [p.to_json() for p in plans]})
            return
        click.echo(f"pipeline {pipeline.name}: {len(pipeline.datasets)} dataset(s) x {len(pipeline.steps)} step(s); "
                   f"state {runner.state.path}")
        for plan in plans:
            click.echo(f"  {plan.action:<8} {plan.id:<40} {plan.reason}")
        counts = {a: sum(p.action == a for p in plans) for a in ("run", "resume", "after", "skip", "blocked")}
        click.echo("  " + ", ".join(f"{n} {a}" for a, n in counts.items() if n) + " (nothing was run: --plan)")
        return
    redirect = contextlib.redirect_stdout(sys.stderr) if as_json else contextlib.nullcontext()
    with redirect:
        done, exit_code = runner.run()
    if as_json:
        emit_json({"pipeline": pipeline.name, "state": str(runner.state.path), "exit_code": exit_code,
                   "units": [p.to_json() for p in done]})
    else:
        ran = [p for p in done if p.action in ("run", "resume", "adopt") and not p.exit_code]
        failed = [p for p in done if p.exit_code]
        click.echo(f"pipeline {pipeline.name}: {len(ran)} ran, {sum(p.action == 'skip' for p in done)} unchanged, "
                   f"{len(failed)} failed, {sum(p.action == 'blocked' for p in done)} blocked; state {runner.state.path}")
        for plan in failed:
            click.echo(f"  failed: {plan.id} (exit {plan.exit_code}); rerun to retry it", err=True)
    if exit_code:
        raise SystemExit(exit_code)


COMMANDS.append(run_command)
