"""Audit a dataset's prompt sets: statistics, leakage, collisions, diversity, confusion, version
diffs. `run_audit` makes the document (audit.json); `write_reports` renders it."""

from promptgen.audit.report import render_html, render_markdown, summary_text, write_reports
from promptgen.audit.run import AUDIT_FORMAT, AuditOptions, TextModel, default_refs, load_results, run_audit

__all__ = ["AUDIT_FORMAT", "AuditOptions", "TextModel", "default_refs", "load_results", "run_audit", "render_html",
           "render_markdown", "summary_text", "write_reports"]
