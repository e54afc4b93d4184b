"""`promptgen runs`: the run log -- what ran, what it wrote, what it cost."""

from __future__ import annotations

from pathlib import Path

import click

from promptgen.cli.common import emit_json, json_option, root_option
from promptgen.paths import resolve_root
from promptgen.runlog import log_path, read_runs, summarise

COMMANDS = []


@click.command("runs")
@click.option("--dataset", help="Only runs on this dataset.")
@click.option("--command", "command_name", help="Only this command (describe, differentiate, import, eval, ...).")
@click.option("--limit", type=click.IntRange(min=0), default=20, show_default=True, help="Latest N runs (0: all).")
@root_option
@json_option
def runs_command(dataset: str | None, command_name: str | None, limit: int, root: Path | None, as_json: bool) -> None:
    """List logged runs (newest last) with what they wrote and cost, then totals per command and per dataset."""
    root_path = resolve_root(root)
    runs = read_runs(root_path)
    if dataset:
        runs = [r for r in runs if r.get("dataset") == dataset]
    if command_name:
        runs = [r for r in runs if r.get("command") == command_name]
    totals = summarise(runs)
    if dataset:
        totals["by_dataset"] = {k: v for k, v in totals["by_dataset"].items() if k == dataset}
    shown = runs[-limit:] if limit else runs
    if as_json:
        emit_json({"log": str(log_path(root_path)), "runs": shown, "totals": totals})
        return
    if not runs:
        click.echo(f"no runs logged in {log_path(root_path)}")
        return
    for run in shown:
        wrote = ", ".join(f"{o['ref']} ({o['records']} texts)" for o in run.get("outputs") or []) or "-"
        if run.get("aggregate"):
            wrote = (f"pipeline: {run['steps']} step run(s), listed after it, counted there" if "steps" in run
                     else "pipeline")
        command = ("  " if run.get("parent") else "") + run.get("command", "?")  # a pipeline's steps are indented
        click.echo(f"{run.get('run')}  {run.get('started', '?')}  {_seconds(run.get('seconds')):>7}  "
                   f"{run.get('status', '?'):<11} {command:<13} {run.get('requests_sent') or 0:>6} req  "
                   f"{_usd(run.get('cost_usd')):>10}  {wrote}")
        if run.get("error"):
            click.echo(f"    error: {run['error']}")
    click.echo("totals per command: " + "; ".join(_bucket(n, t) for n, t in sorted(totals["by_command"].items())))
    if totals["by_dataset"]:
        click.echo("totals per dataset: " + "; ".join(_bucket(n, t) for n, t in sorted(totals["by_dataset"].items())))
    click.echo("total: " + _bucket(None, totals["total"]))


def _bucket(name: str | None, totals: dict) -> str:
    runs = f"{totals['runs']} run{'s' if totals['runs'] != 1 or name is None else ''}"  # the total: "N runs"
    unpriced = f" (+{totals['unknown_cost']} {'runs ' if name is None else ''}unpriced)" if totals["unknown_cost"] else ""
    return f"{name + ' ' if name else ''}{runs}, {totals['requests_sent']:,} requests, {_usd(totals['cost_usd'])}{unpriced}"

def _usd(value: float | None) -> str:
    return "unpriced" if value is None else f"${value:,.4f}"


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}s"


COMMANDS.append(runs_command)
