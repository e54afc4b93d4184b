"""A local OpenAI-compatible chat server with deterministic answers, for tests and benchmarks.

It speaks real HTTP so that the real openai/litellm clients are exercised end to end. Answers
are a pure function of (messages, sample index), so two runs of the same job get the same text.
Latency and faults (429 with Retry-After, 500, timeouts, empty, refusal, garbage, malformed
bodies) are configured per server and, optionally, only for requests whose last user message
contains a given substring. `Chaos` injects faults into a random fraction of all requests
(429 with Retry-After, 500, dropped connections, answers slower than the client's timeout,
truncated bodies), and the server counts the answers it actually delivered, per request, so a
test can prove that nothing was paid twice.

It also speaks OpenAI's batch API: /v1/files (multipart upload, metadata, content) and
/v1/batches (create, retrieve, cancel). A batch moves validating -> in_progress -> its outcome
after `batch_polls` retrievals; each line is answered like a chat request (same answers, same
faults), and good answers count as delivered under the same key as online ones, so "paid twice"
checks hold across both paths. A seeded `batch_failure_rate` of lines goes to the error file
(a 500 line, or a line with only an `error`), and `batch_outcome` can make a batch fail, expire
or be cancelled with part of its lines answered.

Run it by hand:  python -m promptgen.testing.fake_server --port 8765 --latency 0.2
"""

from __future__ import annotations

import argparse
import email.parser
import email.policy
import json
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

from promptgen.testing.fake_answers import (CHAOS_KINDS, REFUSAL_TEXT, Chaos, Fault, _digest, _sample_index,
                                           default_answer, pair_answer)

__all__ = ["Fault", "Chaos", "FakeLLMServer", "default_answer", "pair_answer", "CHAOS_KINDS", "BATCH_OUTCOMES",
           "BATCH_FAILURE_KINDS"]

_ERROR_FAULTS = {"429": 429, "500": 500, "401": 401, "timeout": 500, "malformed": 500, "echo_auth": 500}
BATCH_OUTCOMES = ("completed", "failed", "expired", "cancelled")
BATCH_FAILURE_KINDS = ("500", "error")


@dataclass
class ServerState:
    latency: float = 0.0
    faults: list[Fault] = field(default_factory=list)
    answer: Callable[[list[dict], int], str] = default_answer
    supports_n: bool = True
    ignores_n: bool = False  # answer once whatever n asks for, as some OpenAI-compatible servers do
    requests: list[dict] = field(default_factory=list)
    prompt_counts: Counter = field(default_factory=Counter)
    saw_auth_header: int = 0
    auth_tokens: set = field(default_factory=set)  # what clients sent, so tests can see which key travelled
    in_flight: int = 0
    max_in_flight: int = 0
    chaos: Chaos | None = None
    outcomes: Counter = field(default_factory=Counter)    # chaos kind (or "ok") per request
    delivered: Counter = field(default_factory=Counter)   # good answers sent, per distinct request
    paths: Counter = field(default_factory=Counter)       # every HTTP request, by method and route
    # the batch API
    batch_polls: int = 2                 # retrievals before a batch reaches its outcome
    batch_failure_rate: float = 0.0      # fraction of lines that fail (seeded by custom_id)
    batch_failure_seed: int = 0
    batch_failure_kinds: tuple[str, ...] = ("500",)
    batch_outcome: str = "completed"     # given to each batch when it is created
    batch_partial: float = 0.5           # share of lines an expired or cancelled batch answered
    files: dict = field(default_factory=dict)      # file id -> {"object": metadata, "content": bytes}
    batches: dict = field(default_factory=dict)    # batch id -> {"object": batch, "lines": [...], "polls": n}
    batch_inputs: list = field(default_factory=list)    # custom_ids of each batch created, in order
    batch_failed: list = field(default_factory=list)    # custom_ids that failed, per batch, in order
    batch_bodies: dict = field(default_factory=dict)    # custom_id -> its request body
    line_seen: Counter = field(default_factory=Counter)  # custom_id -> batches it was in


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in two writes; Nagle would add 40 ms
    server: "_Server"

    def log_message(self, format: str, *args: Any) -> None:  # silence per-request logging
        pass

    def _send(self, status: int, body: bytes | str | dict, headers: dict[str, str] | None = None) -> None:
        if isinstance(body, dict):
            body = json.dumps(body)
        if isinstance(body, str):
            body = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        try:
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _note_request(self, method: str) -> None:
        state = self.server.state
        if self.path.startswith("/_"):
            return  # the test's own control and stats calls
        route = re.sub(r"/(file|batch)[-_][A-Za-z0-9]+", r"/{\1}", self.path.split("?", 1)[0])
        with self.server.lock:
            state.paths[f"{method} {route}"] += 1
            if self.headers.get("Authorization"):  # every route: a key must travel only as this header
                state.auth_tokens.add(self.headers["Authorization"].split(" ", 1)[-1])

    def do_GET(self) -> None:
        state = self.server.state
        self._note_request("GET")
        route = _BATCH_ROUTE.match(self.path.split("?", 1)[0])
        if route:
            self._batch_api("GET", route, b"")
        elif self.path.rstrip("/").endswith("/models"):
            self._send(200, {"object": "list", "data": [{"id": "test", "object": "model"}]})
        elif self.path == "/_stats":
            with self.server.lock:
                self._send(200, {"requests": len(state.requests),
                                 "distinct_prompts": len(state.prompt_counts),
                                 "max_repeats": max(state.prompt_counts.values(), default=0),
                                 "max_in_flight": state.max_in_flight, "outcomes": dict(state.outcomes),
                                 "delivered": sum(state.delivered.values()),
                                 "delivered_distinct": len(state.delivered),
                                 "delivered_max": max(state.delivered.values(), default=0),
                                 "batches_created": len(state.batch_inputs),
                                 "batch_lines": sum(len(ids) for ids in state.batch_inputs),
                                 "batch_lines_failed": sum(len(ids) for ids in state.batch_failed),
                                 "paths": dict(state.paths)})
        else:
            self._send(404, {"error": {"message": f"no route {self.path}"}})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        self._note_request("POST")
        if self.path == "/_control":
            self.server.fake.configure(**json.loads(raw or b"{}"))
            self._send(200, {"ok": True})
            return
        route = _BATCH_ROUTE.match(self.path.split("?", 1)[0])
        if route:
            self._batch_api("POST", route, raw)
            return
        if not self.path.rstrip("/").endswith("/chat/completions"):
            self._send(404, {"error": {"message": f"no route {self.path}"}})
            return
        body = json.loads(raw)
        messages = body.get("messages", [])
        prompt = messages[-1].get("content", "") if messages else ""
        state = self.server.state
        with self.server.lock:
            state.in_flight += 1
            state.max_in_flight = max(state.max_in_flight, state.in_flight)
        try:
            self._answer(body, messages, prompt, state)
        finally:
            with self.server.lock:
                state.in_flight -= 1

    def _answer(self, body: dict, messages: list[dict], prompt: str, state: ServerState) -> None:
        with self.server.lock:
            n = 1 if state.ignores_n else int(body.get("n") or 1)
            state.requests.append(body)
            request_digest = _digest(messages, {k: v for k, v in body.items() if k != "messages"})
            state.prompt_counts[request_digest] += 1
            chaos = state.chaos.draw() if state.chaos else None
            state.outcomes[chaos or "ok"] += 1
            if self.headers.get("Authorization"):
                state.saw_auth_header += 1
            fault = next((f for f in state.faults if f.applies(prompt)), None)
            if fault:
                fault.hits += 1
            latency = state.latency
        if latency:
            time.sleep(latency)
        if chaos == "429":
            self._send(429, {"error": {"message": "rate limited", "type": "rate_limit_error"}},
                       {"Retry-After": f"{state.chaos.retry_after:g}"})
            return
        if chaos == "500":
            self._send(500, {"error": {"message": "internal error", "type": "server_error"}})
            return
        if chaos == "drop":
            self.close_connection = True  # no status line at all: the client sees the connection drop
            return
        if chaos == "malformed":
            self._send(200, b'{"id": "x", "choices": [{"message": {"content": "cut off mid')
            return
        if chaos == "slow":
            time.sleep(state.chaos.slow_delay)
        if fault and fault.kind == "429":
            headers = {"Retry-After": f"{fault.retry_after:g}"} if fault.retry_after is not None else {}
            self._send(429, {"error": {"message": "rate limited", "type": "rate_limit_error"}}, headers)
            return
        if fault and fault.kind == "500":
            self._send(500, {"error": {"message": "internal error", "type": "server_error"}})
            return
        if fault and fault.kind == "401":
            self._send(401, {"error": {"message": "Incorrect API key provided", "type": "invalid_request_error",
                                       "code": "invalid_api_key"}})
            return
        if fault and fault.kind == "echo_auth":
            # a careless provider that repeats the credential back in its error message
            token = (self.headers.get("Authorization") or "").split(" ", 1)[-1]
            self._send(500, {"error": {"message": f"upstream rejected credential {token}"}})
            return
        if fault and fault.kind == "timeout":
            time.sleep(fault.delay)
        if fault and fault.kind == "malformed":
            self._send(200, b'{"id": "x", "choices": [{"message": {"content": "trunc')
            return
        if n > 1 and not state.supports_n:
            self._send(400, {"error": {"message": "n > 1 is not supported", "type": "invalid_request_error"}})
            return
        completion = _completion(state, body, n, fault)
        if not fault and chaos != "slow":  # an answer the client waited for: this one is paid
            with self.server.lock:
                state.delivered[request_digest] += 1
        self._send(200, completion)

    # -- the batch API ------------------------------------------------------------------------

    def _batch_api(self, method: str, route: re.Match, raw: bytes) -> None:
        fake, kind, object_id, action = self.server.fake, route["kind"], route["id"], route["action"]
        if method == "POST" and kind == "files" and not object_id:
            upload = _multipart(self.headers.get("Content-Type", ""), raw)
            if "file" not in upload or upload.get("purpose", (None, b""))[1] != b"batch":
                self._send(400, {"error": {"message": "a file and purpose=batch are required",
                                           "type": "invalid_request_error"}})
                return
            self._send(200, fake.add_file(upload["file"][0] or "upload.jsonl", upload["file"][1]))
        elif method == "GET" and kind == "files" and object_id:
            stored = fake.state.files.get(object_id)
            if stored is None:
                self._send(404, {"error": {"message": f"no file {object_id}", "type": "invalid_request_error"}})
            elif action == "content":
                self._send(200, stored["content"], {"Content-Type": "application/octet-stream"})
            else:
                self._send(200, stored["object"])
        elif method == "POST" and kind == "batches" and not object_id:
            request = json.loads(raw or b"{}")
            created = fake.create_batch(request.get("input_file_id", ""), request.get("endpoint", ""),
                                        request.get("completion_window", ""))
            self._send(*created)
        elif kind == "batches" and object_id and (method, action) in (("GET", None), ("POST", "cancel")):
            found = fake.poll_batch(object_id, cancel=action == "cancel")
            if found is None:
                self._send(404, {"error": {"message": f"no batch {object_id}", "type": "invalid_request_error"}})
            else:
                self._send(200, found)
        else:
            self._send(404, {"error": {"message": f"no route {method} {self.path}"}})


_BATCH_ROUTE = re.compile(r"^(?:/v1)?/(?P<kind>files|batches)(?:/(?P<id>[^/]+))?(?:/(?P<action>content|cancel))?/?$")


def _multipart(content_type: str, raw: bytes) -> dict[str, tuple[str | None, bytes]]:
    """The fields of a multipart/form-data body: name -> (filename, bytes). The email package
    parses MIME (the `cgi` module that used to is gone from Python 3.13)."""
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + raw)
    fields = {}
    for part in message.iter_parts() if message.is_multipart() else []:
        name = part.get_param("name", header="content-disposition")
        if name:
            fields[name] = (part.get_filename(), part.get_payload(decode=True) or b"")
    return fields


def _completion(state: ServerState, body: dict, n: int, fault: Fault | None) -> dict:
    """The chat.completion the server answers `body` with (a fault may change the texts)."""
    messages = body.get("messages", [])
    choices = []
    stop = body.get("stop")
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    max_tokens = body.get("max_tokens") or body.get("max_completion_tokens")
    completion_tokens = 0
    for i in range(n):
        index = _sample_index(body, i)
        if fault and fault.kind == "empty":
            text = ""
        elif fault and fault.kind == "refusal":
            text = REFUSAL_TEXT
        elif fault and fault.kind == "garbage":
            text = "\x00\x00 }{ ]] " if i % 2 == 0 else "   "
        elif fault and fault.kind == "one_bullet":
            text = "- only one"
        elif fault and fault.kind == "text":
            text = fault.text
        else:
            text = state.answer(messages, index)
        finish = "stop"
        if fault and fault.kind == "truncated":
            text, finish = text[: len(text) // 2], "length"
        for s in stops:
            if s and s in text:
                text = text[: text.index(s)]
        words = text.split(" ")
        if max_tokens and len(words) > max_tokens and finish == "stop":
            text, finish = " ".join(words[:max_tokens]), "length"
        completion_tokens += max(1, len(text) // 4)
        choices.append({"index": i, "finish_reason": finish,
                        "message": {"role": "assistant", "content": text}})
    prompt_tokens = max(1, sum(len(str(m.get("content", ""))) for m in messages) // 4)
    return {"id": "chatcmpl-" + _digest(messages, n)[:12], "object": "chat.completion",
            "created": 1700000000, "model": body.get("model", "test"), "choices": choices,
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens}}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024  # clients open dozens of connections at once; the default 5 drops them

    def handle_error(self, request: Any, client_address: Any) -> None:
        # a client that goes away (killed, timed out) is part of what this server is for
        import sys

        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)
    state: ServerState
    lock: threading.Lock
    fake: "FakeLLMServer"


class FakeLLMServer:
    """Context manager: `with FakeLLMServer(latency=0.2) as server: ... server.url ...`."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, latency: float = 0.0,
                 faults: list[Fault] | None = None, supports_n: bool = True, ignores_n: bool = False,
                 answer: Callable[[list[dict], int], str] | None = None) -> None:
        self._httpd = _Server((host, port), _Handler)
        self._httpd.state = ServerState(latency=latency, faults=list(faults or []), supports_n=supports_n,
                                        ignores_n=ignores_n, answer=answer or default_answer)
        self._httpd.lock = threading.Lock()
        self._httpd.fake = self
        self._thread: threading.Thread | None = None

    @property
    def state(self) -> ServerState:
        return self._httpd.state

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        """The api base to hand to clients (ends in /v1)."""
        return f"http://127.0.0.1:{self.port}/v1"

    def configure(self, latency: float | None = None, faults: list[Fault | dict] | None = None,
                  supports_n: bool | None = None, chaos: Chaos | dict | None = None,
                  batch_polls: int | None = None, batch_failure_rate: float | None = None,
                  batch_failure_seed: int | None = None, batch_failure_kinds: list[str] | tuple[str, ...] | None = None,
                  batch_outcome: str | None = None, batch_partial: float | None = None) -> None:
        if batch_outcome is not None and batch_outcome not in BATCH_OUTCOMES:
            raise ValueError(f"batch_outcome: one of {', '.join(BATCH_OUTCOMES)}, not {batch_outcome!r}")
        if batch_failure_kinds is not None and (not batch_failure_kinds or
                                                set(batch_failure_kinds) - set(BATCH_FAILURE_KINDS)):
            raise ValueError(f"batch_failure_kinds: some of {', '.join(BATCH_FAILURE_KINDS)}")
        if batch_failure_rate is not None and not 0 <= batch_failure_rate <= 1:
            raise ValueError("batch_failure_rate must be in [0, 1]")
        with self._httpd.lock:
            for name, value in (("batch_polls", batch_polls), ("batch_failure_rate", batch_failure_rate),
                                ("batch_failure_seed", batch_failure_seed), ("batch_outcome", batch_outcome),
                                ("batch_partial", batch_partial)):
                if value is not None:
                    setattr(self.state, name, value)
            if batch_failure_kinds is not None:
                self.state.batch_failure_kinds = tuple(batch_failure_kinds)
            if chaos is not None:
                self.state.chaos = chaos if isinstance(chaos, Chaos) else Chaos(**chaos) if chaos else None
            if latency is not None:
                self.state.latency = float(latency)
            if faults is not None:
                self.state.faults = [f if isinstance(f, Fault) else Fault(**f) for f in faults]
            if supports_n is not None:
                self.state.supports_n = bool(supports_n)

    @property
    def request_count(self) -> int:
        return len(self.state.requests)

    @property
    def max_repeats(self) -> int:
        """How often the most repeated identical request was received (1 = nothing sent twice)."""
        return max(self.state.prompt_counts.values(), default=0)

    @property
    def batches_created(self) -> int:
        return len(self.state.batch_inputs)

    @property
    def batch_lines(self) -> int:
        """Lines received in all batches created (since the last reset_counts)."""
        return sum(len(ids) for ids in self.state.batch_inputs)

    def reset_counts(self) -> None:
        """Zero the counters (files and batches themselves stay, as at a real provider)."""
        with self._httpd.lock:
            self.state.requests.clear()
            self.state.prompt_counts.clear()
            self.state.max_in_flight = 0
            self.state.outcomes.clear()
            self.state.delivered.clear()
            self.state.paths.clear()
            self.state.batch_inputs.clear()
            self.state.batch_failed.clear()

    # -- the batch API (called by the handler) --------------------------------------------------

    def add_file(self, filename: str, content: bytes, purpose: str = "batch") -> dict:
        with self._httpd.lock:
            file_id = f"file-{len(self.state.files) + 1:06d}{_digest(filename, len(content))[:8]}"
            meta = {"id": file_id, "object": "file", "bytes": len(content), "created_at": int(time.time()),
                    "filename": filename, "purpose": purpose, "status": "processed"}
            self.state.files[file_id] = {"object": meta, "content": content}
            return meta

    def create_batch(self, input_file_id: str, endpoint: str, completion_window: str) -> tuple[int, dict]:
        """(status, body) of POST /v1/batches."""
        invalid = {"type": "invalid_request_error"}
        stored = self.state.files.get(input_file_id)
        if stored is None:
            return 404, {"error": {**invalid, "message": f"no file {input_file_id}"}}
        if endpoint != "/v1/chat/completions" or completion_window != "24h":
            return 400, {"error": {**invalid, "message": "endpoint /v1/chat/completions and completion_window 24h only"}}
        try:
            lines = [json.loads(line) for line in stored["content"].decode().splitlines() if line.strip()]
        except ValueError:
            return 400, {"error": {**invalid, "message": "the input file is not JSONL"}}
        ids = [line.get("custom_id") for line in lines]
        if not lines or None in ids or len(set(ids)) != len(ids) or \
                any(line.get("url") != "/v1/chat/completions" or line.get("method") != "POST" for line in lines):
            return 400, {"error": {**invalid, "message": "each line needs a unique custom_id, POST and the endpoint url"}}
        with self._httpd.lock:
            batch_id = f"batch_{len(self.state.batches) + 1:06d}{_digest(input_file_id)[:8]}"
            batch = {"id": batch_id, "object": "batch", "endpoint": endpoint, "errors": None,
                     "input_file_id": input_file_id, "completion_window": completion_window, "status": "validating",
                     "output_file_id": None, "error_file_id": None, "created_at": int(time.time()),
                     "in_progress_at": None, "expires_at": int(time.time()) + 86400, "completed_at": None,
                     "failed_at": None, "expired_at": None, "cancelled_at": None, "metadata": None,
                     "request_counts": {"total": len(lines), "completed": 0, "failed": 0}}
            self.state.batches[batch_id] = {"object": batch, "lines": lines, "polls": 0,
                                            "outcome": self.state.batch_outcome}
            self.state.batch_inputs.append(ids)
            for line in lines:
                self.state.batch_bodies[line["custom_id"]] = line.get("body") or {}
            return 200, dict(batch)

    def poll_batch(self, batch_id: str, cancel: bool = False) -> dict | None:
        """GET /v1/batches/{id} (each call moves the batch on) or POST .../cancel."""
        with self._httpd.lock:
            entry = self.state.batches.get(batch_id)
            if entry is None:
                return None
            batch = entry["object"]
            if batch["status"] in BATCH_OUTCOMES:
                return dict(batch)
            if cancel:
                batch["status"] = "cancelling"
                entry["outcome"] = "cancelled"
                return dict(batch)
            entry["polls"] += 1
            if entry["polls"] < self.state.batch_polls and batch["status"] != "cancelling":
                batch["status"] = "in_progress"
                batch["in_progress_at"] = batch["in_progress_at"] or int(time.time())
                done = len(entry["lines"]) * entry["polls"] // max(1, self.state.batch_polls)
                batch["request_counts"] = {"total": len(entry["lines"]), "completed": done, "failed": 0}
                return dict(batch)
            self._finish_batch(entry)
            return dict(batch)

    def _finish_batch(self, entry: dict) -> None:
        """Answer the batch's lines (all, part or none, by its outcome) into output and error files."""
        state, batch, outcome = self.state, entry["object"], entry["outcome"]
        lines = entry["lines"]
        if outcome == "failed":
            batch.update(status="failed", failed_at=int(time.time()),
                         errors={"object": "list", "data": [{"code": "invalid_request", "line": None,
                                                             "message": "the batch failed validation"}]})
            state.batch_failed.append([])
            return
        if outcome in ("expired", "cancelled"):
            lines = lines[: int(len(lines) * state.batch_partial)]
        output, errors = [], []
        for number, line in enumerate(lines):
            answered, good = self._answer_line(line, f"{batch['id']}-{number}")
            (output if good else errors).append(answered)
        failed_ids = [line["custom_id"] for line in errors]
        state.batch_failed.append(failed_ids)
        now = int(time.time())
        batch.update(status=outcome, request_counts={"total": len(entry["lines"]), "completed": len(output),
                                                      "failed": len(errors)},
                     **{f"{outcome}_at": now})
        if output:
            batch["output_file_id"] = self._store_lines(f"{batch['id']}_output.jsonl", output)
        if errors:
            batch["error_file_id"] = self._store_lines(f"{batch['id']}_error.jsonl", errors)

    def _store_lines(self, filename: str, lines: list[dict]) -> str:
        content = "".join(json.dumps(line) + "\n" for line in lines).encode()
        file_id = f"file-{len(self.state.files) + 1:06d}{_digest(filename)[:8]}"
        self.state.files[file_id] = {"content": content, "object": {
            "id": file_id, "object": "file", "bytes": len(content), "created_at": int(time.time()),
            "filename": filename, "purpose": "batch_output", "status": "processed"}}
        return file_id

    def _answer_line(self, line: dict, request_id: str) -> tuple[dict, bool]:
        """One batch line's output (or error) line, answered as the chat endpoint would; True when good."""
        state, custom_id = self.state, line["custom_id"]
        body = line.get("body") or {}
        messages = body.get("messages", [])
        prompt = messages[-1].get("content", "") if messages else ""
        seen = state.line_seen[custom_id]
        state.line_seen[custom_id] += 1
        # the seen count is drawn with the id: a line that failed may succeed in a later batch
        draw = int(_digest("batch-failure", state.batch_failure_seed, custom_id, seen)[:8], 16) / 16 ** 8
        fault = next((f for f in state.faults if f.applies(prompt)), None)
        if fault:
            fault.hits += 1
        drawn = draw < state.batch_failure_rate
        status = 500 if drawn else _ERROR_FAULTS.get(fault.kind) if fault else None
        n = 1 if state.ignores_n else int(body.get("n") or 1)
        if status is None and n > 1 and not state.supports_n:
            status = 400
        head = {"id": f"batch_req_{request_id}", "custom_id": custom_id}
        if status is not None:
            kinds = state.batch_failure_kinds
            if drawn and kinds[int(draw * 1e6) % len(kinds)] == "error":
                return {**head, "response": None, "error": {"code": "server_error",
                                                            "message": "the line could not be processed"}}, False
            return {**head, "response": {"status_code": status, "request_id": f"req_{request_id}", "body": {
                "error": {"message": "internal error" if status >= 500 else "request rejected",
                          "type": "server_error" if status >= 500 else "invalid_request_error"}}},
                    "error": None}, False
        completion = _completion(state, body, n, fault)
        if not fault:
            state.delivered[_digest(messages, {k: v for k, v in body.items() if k != "messages"})] += 1
        return {**head, "response": {"status_code": 200, "request_id": f"req_{request_id}", "body": completion},
                "error": None}, True

    def start(self) -> "FakeLLMServer":
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> "FakeLLMServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description="Run promptgen's fake OpenAI-compatible server.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765, help="0 picks a free port (printed on the first line)")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to every answer")
    parser.add_argument("--chaos", type=float, default=0.0, help="fraction of requests given a random fault")
    parser.add_argument("--chaos-kinds", default=",".join(CHAOS_KINDS), help="faults to draw from")
    parser.add_argument("--chaos-seed", type=int, default=0)
    parser.add_argument("--slow-delay", type=float, default=3.0, help="seconds a 'slow' fault stalls")
    parser.add_argument("--batch-polls", type=int, default=2, help="batch retrievals before a batch ends")
    parser.add_argument("--batch-failure-rate", type=float, default=0.0, help="fraction of batch lines that fail")
    parser.add_argument("--batch-outcome", choices=BATCH_OUTCOMES, default="completed")
    args = parser.parse_args()
    server = FakeLLMServer(args.host, args.port, latency=args.latency)
    server.configure(batch_polls=args.batch_polls, batch_failure_rate=args.batch_failure_rate,
                     batch_outcome=args.batch_outcome)
    if args.chaos:
        server.configure(chaos=Chaos(args.chaos, tuple(args.chaos_kinds.split(",")), args.chaos_seed,
                                     slow_delay=args.slow_delay))
    print(f"fake LLM server on {server.url} (model name: anything, e.g. openai/test)", flush=True)
    try:
        server._httpd.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
