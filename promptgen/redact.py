"""Keep credentials out of everything promptgen writes or prints.

Secrets come from the environment (any variable whose name looks like a key or token) and
from URLs (user:password@ and key-like query parameters). `redact` replaces each with a marker;
every error message, log line and manifest field that could carry provider text goes through it.
"""

from __future__ import annotations

import os
import re
import sys
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import click

__all__ = ["redact", "redact_url", "secret_values", "register_secret", "redacted_command"]

_SECRET_NAME = re.compile(r"(API_?KEY|_KEY|TOKEN|SECRET|PASSWORD)$", re.IGNORECASE)
_BEARER = re.compile(r"(Bearer\s+)[A-Za-z0-9._~+/=-]{8,}")
_KEY_LIKE = re.compile(r"\b(sk|pk|rk|xai|gsk|hf)[-_][A-Za-z0-9_-]{12,}\b")
# inside any text (a URL glued to other words, e.g. "defaults.api-base=https://u:p@host/v1?key=..."):
# user:password@ after a scheme (up to the last @ before the host's end, as a password may hold @),
# and the values of query parameters named like credentials (api_key, x-api-key, token, password,
# sig, ...; not keyword, max_tokens or design)
_URL_USERINFO = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*://)[^/\s?#\"'<>,\\]*@")
_CREDENTIAL_NAME = r"(?:[A-Za-z0-9]+[-_])*(?:key|token|secret|sig|signature|password|passwd|pwd|auth|credentials?)"
_URL_KEY_PARAM = re.compile(r"([?&]" + _CREDENTIAL_NAME + r"=)[^&\s#\"'<>\\]+", re.IGNORECASE)
MARK = "[REDACTED]"
_REGISTERED: set[str] = set()


def register_secret(value: str) -> None:
    """A credential that does not live in a key-named variable (e.g. the one --api-key-env names)."""
    if value and len(value) >= 4:
        _REGISTERED.add(value)


def secret_values() -> list[str]:
    """Registered credentials and the values of environment variables that look like credentials."""
    values = {v for k, v in os.environ.items() if _SECRET_NAME.search(k) and len(v) >= 8} | _REGISTERED
    return sorted(values, key=len, reverse=True)


def redact(text: str) -> str:
    if not text:
        return text
    for value in secret_values():
        text = text.replace(value, MARK)
    text = _BEARER.sub(lambda m: m.group(1) + MARK, text)
    text = _URL_USERINFO.sub(lambda m: m.group(1), text)
    text = _URL_KEY_PARAM.sub(lambda m: m.group(1) + MARK, text)
    return _KEY_LIKE.sub(MARK, text)


def redact_url(url: str | None) -> str | None:
    """Drop user:password@ and key-like query parameters from an API base before it is stored."""
    if not url:
        return url
    parts = urlsplit(url)
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    query = urlencode([(k, MARK if re.search(r"key|token|secret|sig|pass|pwd|auth|credential", k, re.I) else v)
                       for k, v in parse_qsl(parts.query, keep_blank_values=True)])
    return redact(urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment)))


def redacted_command() -> str:
    """The running command as the user would retype it, with credentials removed: from click's
    context when a promptgen command runs (so in-process calls are not confused with the host
    program's argv), else from sys.argv. URLs lose user:password@ and key-like parameters."""
    ctx = click.get_current_context(silent=True)
    if ctx is None or ctx.parent is None:
        words = [os.path.basename(sys.argv[0] or "python")] + sys.argv[1:]
    else:
        words = ["promptgen", ctx.info_name or ""]
        for param in ctx.command.params:
            value = ctx.params.get(param.name)
            if value is None or value is False or value == () or (not isinstance(param, click.Argument)
                                                                  and value == param.default):
                continue
            values = value if isinstance(value, (tuple, list)) else [value]
            if isinstance(param, click.Argument):
                words += [str(v) for v in values]
            elif value is True:
                words.append(param.opts[0])
            else:
                for v in values:
                    words += [param.opts[0], str(v)]
    return redact(" ".join(redact_url(w) if "://" in w else w for w in words))
