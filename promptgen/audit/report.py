"""Renderings of an audit document: report.html (self-contained, plots inlined), report.md (plots
beside it as PNG), audit.json, and the one-screen summary the command prints."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

from promptgen.audit.plots import histogram_png
from promptgen.errors import PromptgenError
from promptgen.fileio import atomic_write_text
from promptgen.messages import shorten

__all__ = ["write_reports", "render_html", "render_markdown", "summary_text", "make_plots"]

_TEMPLATES = Path(__file__).parent / "templates"


def _num(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.3f}"
    return f"{int(value):,}"


def _f3(value: object) -> str:
    return "-" if value is None else f"{value:.3f}"


def _pct(value: object) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def _signed_pct(value: object) -> str:
    return "-" if value is None else f"{100 * value:+.2f} pt"


def _usd(value: object) -> str:
    return "-" if value is None else f"${value:,.4f}"


_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+!|~-])")


def _md(value: object) -> str:
    """Text for a Markdown table cell: HTML characters as entities (a renderer that passes HTML
    through shows them as text), Markdown punctuation backslashed, one line."""
    text = " ".join(str(value).split())
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _MD_SPECIAL.sub(r"\\\1", text)


def _json(value: object) -> str:
    """A manifest value as JSON, non-ASCII kept; the template's escaping makes it safe."""
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def _sort_by_total(items: object) -> list:
    return sorted(items, key=lambda kv: (-sum(kv[1].values()), int(kv[0])))


def _environment(autoescape: bool):
    import jinja2

    environment = jinja2.Environment(loader=jinja2.FileSystemLoader(_TEMPLATES), autoescape=autoescape,
                                     undefined=jinja2.StrictUndefined, trim_blocks=False, keep_trailing_newline=True)
    environment.filters.update(num=_num, f3=_f3, pct=_pct, signed_pct=_signed_pct, usd=_usd, md=_md, json=_json,
                               sort_by_total=_sort_by_total)
    return environment


def make_plots(audit: dict) -> dict:
    """PNG figures of the audit: the distribution of per-class diversity (all sets), and per
    evaluation the distribution of per-class accuracy deltas against the baseline head."""
    plots: dict = {"diversity": None, "deltas": []}
    diversity = {s["ref"]: [d for d in s["embedding"]["diversity"]["per_class"] if d is not None]
                 for s in audit["sets"] if s.get("embedding")}
    if any(diversity.values()):
        plots["diversity"] = {"file": "diversity.png", "png": histogram_png(
            diversity, title="Per-class diversity of texts", xlabel="mean pairwise cosine of a class's texts")}
    for index, evaluation in enumerate(audit.get("evaluation") or []):
        series = {h["head"]: [d for d in h["per_class_delta"] if d is not None]
                  for h in evaluation["heads"] if h["head"] != evaluation["baseline"]}
        if any(series.values()):
            plots["deltas"].append({"evaluation": index, "file": f"accuracy-delta-{index + 1}.png", "png": histogram_png(
                {k: [100 * v for v in vs] for k, vs in series.items()}, zero_line=True,
                title=f"Per-class top-1 change against {evaluation['baseline']}", xlabel="accuracy points")})
    return plots


def _with_plot_data(audit: dict, plots: dict) -> dict:
    def encoded(plot: dict) -> dict:
        return {"file": plot["file"], "data": base64.b64encode(plot["png"]).decode("ascii"),
                **({"evaluation": plot["evaluation"]} if "evaluation" in plot else {})}
    return {**audit, "plots": {"diversity": encoded(plots["diversity"]) if plots["diversity"] else None,
                               "deltas": [encoded(p) for p in plots["deltas"]]}}


def render_html(audit: dict, plots: dict | None = None) -> str:
    return _environment(True).get_template("report.html.j2").render(
        a=_with_plot_data(audit, plots or make_plots(audit)))


def render_markdown(audit: dict, plots: dict | None = None) -> str:
    return _environment(False).get_template("report.md.j2").render(
        a=_with_plot_data(audit, plots or make_plots(audit)))


def write_reports(audit: dict, directory: Path) -> dict[str, Path]:
    """audit.json, report.html, report.md and the PNGs the Markdown links to, each written atomically."""
    directory.mkdir(parents=True, exist_ok=True)
    plots = make_plots(audit)
    audit = {**audit, "plots": {"diversity": plots["diversity"]["file"] if plots["diversity"] else None,
                                "deltas": [p["file"] for p in plots["deltas"]]}}
    written = {}
    try:
        for plot in ([plots["diversity"]] if plots["diversity"] else []) + plots["deltas"]:
            path = directory / plot["file"]
            temp = path.with_name(f".{path.name}.tmp")
            temp.write_bytes(plot["png"])
            temp.replace(path)
            written[plot["file"]] = path
        for name, text in (("audit.json", json.dumps(audit, ensure_ascii=False, indent=1) + "\n"),
                           ("report.html", render_html(audit, plots)), ("report.md", render_markdown(audit, plots))):
            atomic_write_text(directory / name, text)
            written[name] = directory / name
    except OSError as exc:
        raise PromptgenError(f"cannot write the reports to {directory}: {exc.strerror or exc}",
                             "free some space or give -o another folder") from None
    return written


def summary_text(audit: dict, written: dict[str, Path] | None = None, examples: int = 3) -> str:
    """What `promptgen audit` prints: one line per set, then a few flagged texts of each kind."""
    lines = [f"{audit['dataset']}: {audit['classes']['count']:,} classes, {len(audit['sets'])} set(s)"
             + (f"; embeddings from {audit['model']['arch']} ({audit['model']['weights']})" if audit.get("model")
                else "; embedding checks skipped")]
    columns = [("texts", "records"), ("dropped", "dropped"), ("repeats", "repeats"), ("failed", "failures"), ("too few", "too_few"),
               (f">{audit['settings']['context_length']} tok", "over_length"), ("leaks", "leaks"),
               ("shared", "shared_texts"), ("near-dup", "near_duplicates"), ("closer-other", "closer_to_other_name"),
               ("diversity", "diversity_median")]
    rows = [["set"] + [title for title, _ in columns]]
    for s in audit["sets"]:
        rows.append([s["ref"]] + [_f3(s["summary"][key]) if key == "diversity_median" else _num(s["summary"][key])
                                  for _, key in columns])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for n, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths))))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    for skipped in audit.get("skipped_sets") or []:
        lines.append(f"not audited: {skipped['ref']}: {_clip(skipped['reason'], 100)}")
    for s in audit["sets"]:
        shown = []
        firsts: dict[int, dict] = {}
        for r in s["leaks"]:  # one example per class named, so one common word does not fill the list
            firsts.setdefault(r["names"][0]["class_index"], r)
        for r in list(firsts.values())[:examples]:
            shown.append(f"  leak      {r['id']}  [{r['class_index']}] {_clip(r['class_name'], 40)}: {_clip(r['text'])} "
                         f"-> names {_clip(', '.join(c['class_name'] for c in r['names']), 60)}")
        for r in s["over_length"][:examples]:
            shown.append(f"  too long  {r['id']}  [{r['class_index']}] {r['class_name']}: {r['tokens']} tokens")
        for g in s["collisions"][:examples]:
            shown.append(f"  shared    {_clip(g['text'], 50)!r} by {len(g['classes'])} classes "
                         f"({', '.join(c['class_name'] for c in g['classes'][:4])}{', ...' if len(g['classes']) > 4 else ''})")
        for c in ((s.get("embedding") or {}).get("closer_to_other_name") or [])[:examples]:
            shown.append(f"  closer    [{c['class_index']}] {c['class_name']}'s texts are nearer "
                         f"'{c['nearest_class_name']}' ({c['nearest_cosine']:.3f} vs {c['own_cosine']:.3f})")
        if shown:
            lines.append(f"{s['ref']}, e.g. (`promptgen show {s['ref']} --id ID`):")
            lines.extend(shown)
    for evaluation in audit.get("evaluation") or []:
        lines.append(f"{evaluation['source']}: {evaluation['images']:,} images, against {evaluation['baseline']}:")
        for h in evaluation["heads"]:
            lines.append(f"  {h['head']}: top-1 {_pct(h['top1'])} ({_signed_pct(h['delta_top1'])}), "
                         f"{h['improved']} classes better, {h['worsened']} worse")
    for d in audit.get("diffs") or []:
        lines.append(f"{d['old']} -> {d['new']}: {d['texts_added']:,} texts added, {d['texts_removed']:,} removed in "
                     f"{d['classes_changed']:,} classes; {len(d['manifest_changes'])} manifest fields differ"
                     + "".join(f"; {a['builder']} top-1 {_signed_pct(a['delta_top1'])}" for a in d["accuracy"]))
    if written:
        lines.append("wrote " + ", ".join(str(written[name]) for name in ("report.html", "report.md", "audit.json")))
    return "\n".join(lines)


_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069]")


def _clip(text: str, width: int = 70) -> str:
    """One line for the terminal: no control or direction-changing characters, at most `width`,
    cut at a word boundary."""
    return shorten(_UNPRINTABLE.sub(" ", text), width)
