"""The prompt store: `prompts/<dataset>/<set>/vN.jsonl` + `vN.manifest.json`, immutable versions.

A version is created with status "running" and written progressively to `vN.requests.jsonl`
(one line per answered request: the request log and the resume journal). When the run ends,
the records are written in a canonical order to `vN.jsonl` and the manifest gets its final
status: "complete", or "partial" when some requests failed (`--resume` retries those). A
complete version is never written again. A process holds `vN.lock` while it writes, so a
second writer is refused and an abandoned version can be told apart from a running one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from promptgen.classes import ClassList, load_class_file, load_dataset, list_datasets
from promptgen.clock import utc_now
from promptgen.errors import PromptgenError
from promptgen.fileio import atomic_write_text, canonical_json, sha256_file
from promptgen.locks import LockFile, describe_holder, holder_note, is_locked
from promptgen.file_formats import MANIFEST_FORMAT
from promptgen.paths import BUILTIN_PROMPTS_DIR, prompts_dir, shipped_versions
from promptgen.version import __version__

__all__ = ["SetRef", "VersionInfo", "Store", "VersionWriter", "SetLock", "make_record", "record_id", "number_repeats",
           "offline_manifest", "class_summary", "MANIFEST_FORMAT"]

log = logging.getLogger(__name__)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_VERSION_FILE = re.compile(r"^v(\d+)\.manifest\.json$")




def check_name(kind: str, name: str) -> str:
    if not _NAME.match(name or "") or name in ("templates",):
        raise PromptgenError(f"invalid {kind} name {name!r}",
                             f"a {kind} name uses letters, digits, '.', '_' and '-' and starts with a letter or digit")
    return name


@dataclass(frozen=True)
class SetRef:
    """`dataset/set@vN`; the set and version are optional (latest complete version)."""

    dataset: str
    set: str | None = None
    version: int | None = None

    @staticmethod
    def parse(text: str, dataset: str | None = None) -> "SetRef":
        spec, _, version = text.partition("@")
        if "/" in spec:
            dataset_part, _, set_part = spec.partition("/")
        elif dataset is not None:
            dataset_part, set_part = dataset, spec
        else:
            dataset_part, set_part = spec, ""
        number = None
        if version:
            digits = version[1:] if version[:1] in "vV" else version
            if not digits.isdigit():
                raise PromptgenError(f"bad version {version!r} in {text!r}", "write versions as @v1, @v2, ...")
            number = int(digits)
        if dataset is not None and dataset_part != dataset:
            raise PromptgenError(f"{text!r} names dataset {dataset_part!r}, not {dataset!r}",
                                 f"use a set of {dataset}, e.g. {dataset}/{set_part or 'SET'}@v1")
        return SetRef(check_name("dataset", dataset_part), check_name("set", set_part) if set_part else None, number)

    def __str__(self) -> str:
        text = self.dataset + (f"/{self.set}" if self.set else "")
        return text + (f"@v{self.version}" if self.version is not None else "")


@dataclass
class VersionInfo:
    dataset: str
    set: str
    version: int
    directory: Path
    manifest: dict

    @property
    def ref(self) -> SetRef:
        return SetRef(self.dataset, self.set, self.version)

    @property
    def records_path(self) -> Path:
        return self.directory / f"v{self.version}.jsonl"

    @property
    def manifest_path(self) -> Path:
        return self.directory / f"v{self.version}.manifest.json"

    @property
    def journal_path(self) -> Path:
        return self.directory / f"v{self.version}.requests.jsonl"

    @property
    def lock_path(self) -> Path:
        return self.directory / f"v{self.version}.lock"

    @property
    def status(self) -> str:
        status = self.manifest.get("status", "unreadable")
        if status == "running" and not is_locked(self.lock_path):
            return "interrupted"
        return status


def record_id(class_index: int, class_name: str, stage: str, text: str, occurrence: int = 1) -> str:
    """A text's id within its class; a repeat of the same text (CuPL's samples repeat, and every
    repeat counts in the head) is its occurrence number 2, 3, ..."""
    payload = canonical_json([class_index, class_name, stage, text] + ([occurrence] if occurrence > 1 else []))
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def number_repeats(records: list[dict]) -> list[dict]:
    """Give a repeat of a (class, text) whose id is taken an id of its own, so ids stay unique when
    repeats are kept; ids that already differ (a differential set's pair ids) stay as they are."""
    seen: Counter = Counter()
    ids: set[str] = set()
    for record in records:
        key = (record["class_index"], record["text"])
        seen[key] += 1
        if record["id"] in ids:
            record["id"] = record_id(record["class_index"], record["class_name"], record["stage"], record["text"],
                                     seen[key])
        ids.add(record["id"])
    return records


def make_record(*, class_index: int, class_name: str, stage: str, kind: str, text: str, template: str | None,
                sample_index: int | None, request_key: str | None, model: str | None, **extra: Any) -> dict:
    record = {"id": record_id(class_index, class_name, stage, text), "class_index": class_index,
              "class_name": class_name, "stage": stage, "kind": kind, "text": text, "template": template,
              "sample_index": sample_index, "request_key": request_key, "model": model}
    record.update({k: v for k, v in extra.items() if v is not None})
    return record


def offline_manifest(stage: str, source: str, sections: dict) -> dict:
    """The manifest of a set written without an LLM (an import, WordNet): the header every set
    has, then the stage's sections in their order. LLM stages get theirs from the stage runner."""
    return {"stage": stage, "source": source, "network": False, "needs_api_key": False, "model": None, **sections}


def class_summary(classes: ClassList) -> dict:
    """A manifest's "classes" section."""
    return {"count": len(classes), "hash": classes.hash, "source": classes.source}


def dedupe_records(records: Iterable[dict], ignore_case: bool = False) -> tuple[list[dict], int]:
    """Drop repeats of a text within a class (first in canonical order wins); names compare
    ignoring case ("ATM" and "atm" are one synonym) and are kept once per source."""
    seen: set[tuple] = set()
    kept, dropped = [], 0
    for record in records:
        key = (record["class_index"], record["text"].casefold(), record.get("source")) if ignore_case else \
            (record["class_index"], record["text"])
        if key in seen:
            dropped += 1
            continue
        seen.add(key)
        kept.append(record)
    return kept, dropped


class Store:
    """`wait_for_writers`: a second run writing the same set waits for the first instead of stopping.
    `on_reserved(info)` and `on_finished(info)` tell the run that made the store (runlog.CommandRun)
    when a version number is reserved and when a version is finished."""

    def __init__(self, root: Path, wait_for_writers: bool = False, *,
                 on_reserved: Callable[[VersionInfo], None] | None = None,
                 on_finished: Callable[[VersionInfo], None] | None = None) -> None:
        self.root = root
        self.prompts = prompts_dir(root)
        self.wait_for_writers = wait_for_writers
        self.on_reserved, self.on_finished = on_reserved, on_finished

    # -- where sets live ----------------------------------------------------------------------

    def _shipped_sets(self) -> list[tuple[str, str]]:
        """The (dataset, set) pairs shipped with promptgen as seen from this root: none when this
        root is the checkout itself (its prompts/ folder is then the user's own, shipped sets and
        the user's sets side by side), else those prompts/shipped.json lists."""
        return [] if self.prompts.resolve() == BUILTIN_PROMPTS_DIR.resolve() else list(shipped_versions())

    def _shipped_dir(self, dataset: str, set_name: str) -> Path | None:
        """The shipped folder of a set as seen from this root, if it is one (see _shipped_sets)."""
        return BUILTIN_PROMPTS_DIR / dataset / set_name if (dataset, set_name) in self._shipped_sets() else None

    def set_dir(self, dataset: str, set_name: str) -> Path:
        """The folder holding the set: the user's root first, else the sets shipped with promptgen."""
        own = self.prompts / dataset / set_name
        shipped = self._shipped_dir(dataset, set_name)
        if shipped is not None and not any(own.glob("v*.manifest.json")):
            return shipped
        return own

    def list_datasets(self) -> list[str]:
        names = {p.parent.parent.name for p in self.prompts.glob("*/*/v*.manifest.json")}
        return sorted(names | {dataset for dataset, _ in self._shipped_sets()})

    def list_sets(self, dataset: str) -> list[str]:
        names = {p.parent.name for p in (self.prompts / dataset).glob("*/v*.manifest.json")}
        return sorted(names | {name for shipped_dataset, name in self._shipped_sets() if shipped_dataset == dataset})

    def list_versions(self, dataset: str, set_name: str) -> list[VersionInfo]:
        directory = self.set_dir(dataset, set_name)
        shipped = shipped_versions().get((dataset, set_name)) if directory == self._shipped_dir(dataset, set_name) \
            else None
        infos = []
        for path in directory.glob("v*.manifest.json"):
            match = _VERSION_FILE.match(path.name)
            if match and (shipped is None or int(match.group(1)) in shipped):
                infos.append(VersionInfo(dataset, set_name, int(match.group(1)), directory, _read_manifest(path)))
        return sorted(infos, key=lambda info: info.version)

    def resolve(self, ref: SetRef) -> VersionInfo:
        """The version a reference names; without @vN, the latest complete one."""
        if ref.set is None:
            sets = self.list_sets(ref.dataset)
            raise PromptgenError(f"{ref} does not name a set",
                                 f"write {ref.dataset}/SET[@vN]; sets of {ref.dataset}: {', '.join(sets) or '(none)'}")
        versions = self.list_versions(ref.dataset, ref.set)
        if not versions:
            sets = self.list_sets(ref.dataset)
            raise PromptgenError(f"no prompt set {ref.dataset}/{ref.set} under {self.prompts}",
                                 f"sets of {ref.dataset}: {', '.join(sets) or '(none)'}; "
                                 f"create one with `promptgen describe` or `promptgen import`")
        if ref.version is None:
            complete = [v for v in versions if v.status == "complete"]
            if not complete:
                raise PromptgenError(f"{ref} has no complete version (latest v{versions[-1].version} is "
                                     f"{versions[-1].status})",
                                     f"finish it with `promptgen describe {ref.dataset} --resume`, or name it: {ref}@v{versions[-1].version}")
            return complete[-1]
        for info in versions:
            if info.version == ref.version:
                return info
        raise PromptgenError(f"{ref.dataset}/{ref.set} has no version v{ref.version}",
                             f"versions: {', '.join(f'v{v.version}' for v in versions)}")

    def read_records(self, info: VersionInfo) -> list[dict]:
        if not info.records_path.exists():
            raise PromptgenError(f"{info.ref} has no records yet (status {info.status})",
                                 "finish it with --resume, or use another version")
        from promptgen.records import parse_records  # heavy: pydantic, kept out of start-up

        return parse_records(info.records_path.read_text(encoding="utf-8"), info.records_path)

    # -- class lists ------------------------------------------------------------------------

    def classes(self, dataset: str, classes_file: str | Path | None = None) -> ClassList:
        """The dataset's class list. A user list given once with --classes is kept in
        `prompts/<dataset>/classes.json`; later commands find it there and reject a different one."""
        check_name("dataset", dataset)
        stored_path = self.prompts / dataset / "classes.json"
        stored = None
        if stored_path.exists():
            data = json.loads(stored_path.read_text(encoding="utf-8"))
            stored = ClassList(dataset=dataset, names=tuple(data["classes"]),
                               ids=tuple(data["ids"]) if data.get("ids") else None, source=data.get("source", ""),
                               title=data.get("title", dataset))
        elif dataset in list_datasets():
            stored = load_dataset(dataset)
        if classes_file is None:
            if stored is None:
                raise PromptgenError(f"unknown dataset {dataset!r}",
                                     f"built-in datasets: {', '.join(list_datasets())}; for your own classes give "
                                     f"--classes FILE (one name per line or a JSON list)")
            return stored
        given = load_class_file(classes_file, dataset)
        if stored is not None:
            if stored.hash != given.hash:
                raise PromptgenError(f"{classes_file} does not match the class list already known for {dataset!r}: "
                                     + describe_class_mismatch(stored.names, given.names),
                                     "use a new dataset name for a different class list")
            return stored
        return given

    def remember_classes(self, classes: ClassList) -> None:
        """Keep a user's class list with the first version written for it (not on a dry run or an
        error), so later commands need no --classes and cannot mix lists under one name."""
        path = self.prompts / classes.dataset / "classes.json"
        if classes.dataset in list_datasets() or path.exists():
            return
        atomic_write_text(path, json.dumps({"dataset": classes.dataset, "source": classes.source,
                                            "classes": list(classes.names),
                                            "ids": list(classes.ids) if classes.ids else None},
                                           ensure_ascii=False, indent=1) + "\n")

    # -- writing ----------------------------------------------------------------------------

    def _writable_dir(self, dataset: str, set_name: str) -> Path:
        check_name("dataset", dataset)
        check_name("set", set_name)
        directory = self.set_dir(dataset, set_name)
        if (dataset, set_name) in shipped_versions() and \
                directory.resolve() == (BUILTIN_PROMPTS_DIR / dataset / set_name).resolve():
            raise PromptgenError(f"{dataset}/{set_name} is a set shipped with promptgen and is read-only",
                                 "choose another set name with --set NAME")
        return directory

    def new_version(self, dataset: str, set_name: str, manifest: dict,
                    classes: ClassList | None = None) -> "VersionWriter":
        """Reserve the next version number with its manifest already in place: the manifest is
        written to a temporary file and hard-linked to vN.manifest.json, which fails if another
        writer took vN first. Nobody ever sees a reserved version without a status."""
        directory = self._writable_dir(dataset, set_name)
        directory.mkdir(parents=True, exist_ok=True)
        set_lock = SetLock.acquire(directory, f"{dataset}/{set_name}", self.wait_for_writers)
        try:
            return self._reserve(dataset, set_name, directory, manifest, classes, set_lock)
        except BaseException:
            set_lock.release()
            raise

    def _reserve(self, dataset: str, set_name: str, directory: Path, manifest: dict, classes: ClassList | None,
                 set_lock: "SetLock") -> "VersionWriter":
        if classes is not None:
            self.remember_classes(classes)
        existing = self.list_versions(dataset, set_name)
        number = existing[-1].version + 1 if existing else 1
        complete = [v for v in existing if v.status == "complete"]
        parent = manifest.pop("parent", f"{dataset}/{set_name}@v{complete[-1].version}" if complete else None)
        while True:
            full = {"format": MANIFEST_FORMAT, "dataset": dataset, "set": set_name, "version": number,
                    "status": "running", "created": utc_now(), "promptgen_version": __version__,
                    "parent": parent, **manifest}
            staged = directory / f".v{number}.manifest.{os.getpid()}.tmp"
            atomic_write_text(staged, _manifest_text(full, directory / f"v{number}.manifest.json"), durable=True)
            try:
                os.link(staged, directory / f"v{number}.manifest.json")
            except FileExistsError:
                number += 1
                continue
            finally:
                staged.unlink(missing_ok=True)
            info = VersionInfo(dataset, set_name, number, directory, full)
            if self.on_reserved is not None:
                try:
                    self.on_reserved(info)
                except Exception as exc:  # it must never break a reservation (the version is already there)
                    log.warning("could not note the reservation of %s: %s", info.ref, exc)
            return VersionWriter(info, set_lock, self.on_finished)

    def resume_version(self, dataset: str, set_name: str, version: int | None = None,
                       fingerprint: dict | None = None) -> "VersionWriter":
        """The unfinished version to continue; with `fingerprint`, its recorded job settings must match."""
        # the set is locked before the version is chosen: a run that waited (--wait) must see what
        # the run it waited for finished, not continue a version that is complete by now
        directory = self._writable_dir(dataset, set_name)
        if not directory.is_dir():
            self.resumable_info(dataset, set_name, version)  # raises: nothing to resume
        set_lock = SetLock.acquire(directory, f"{dataset}/{set_name}", self.wait_for_writers)
        try:
            info = self.resumable_info(dataset, set_name, version)
            if fingerprint is not None:
                recorded = info.manifest.get("job", {})
                changed = sorted(k for k in fingerprint if recorded.get(k) != fingerprint[k])
                if changed:
                    raise PromptgenError(
                        f"{info.ref} was started with different settings ({', '.join(changed)}): "
                        + "; ".join(f"{k} was {recorded.get(k)!r}, now {fingerprint[k]!r}" for k in changed),
                        "rerun with the original settings, or drop --resume to make a new version")
        except BaseException:
            set_lock.release()
            raise
        return VersionWriter(info, set_lock, self.on_finished)

    def resumable_info(self, dataset: str, set_name: str, version: int | None = None) -> VersionInfo:
        """The version `--resume` would continue (the latest unfinished one, or `version`)."""
        versions = self.list_versions(dataset, set_name)
        candidates = [v for v in versions if version is None or v.version == version]
        if version is None:
            candidates = [v for v in candidates if v.status in ("interrupted", "partial", "running")]
        if not candidates:
            latest = f"latest is v{versions[-1].version} ({versions[-1].status})" if versions else "it has no versions"
            raise PromptgenError(f"nothing to resume in {dataset}/{set_name}: {latest}",
                                 "run without --resume to make a new version")
        info = candidates[-1]
        if info.status == "complete":
            raise PromptgenError(f"{info.ref} is complete and immutable", "run without --resume to make a new version")
        return info

    def write_version(self, dataset: str, set_name: str, records: list[dict], manifest: dict,
                      classes: ClassList | None = None) -> VersionInfo:
        """A version written in one go (imports, offline sources)."""
        writer = self.new_version(dataset, set_name, manifest, classes)
        with writer:
            return writer.finish(records, writer.info.manifest | {"status": "complete"})


def describe_class_mismatch(expected: tuple[str, ...] | list[str], given: tuple[str, ...] | list[str]) -> str:
    missing = [n for n in expected if n not in set(given)]
    extra = [n for n in given if n not in set(expected)]
    parts = []
    if len(expected) != len(given):
        parts.append(f"{len(given)} classes instead of {len(expected)}")
    if missing:
        parts.append(f"missing {', '.join(map(repr, missing[:8]))}" + (f" and {len(missing) - 8} more" if len(missing) > 8 else ""))
    if extra:
        parts.append(f"unknown {', '.join(map(repr, extra[:8]))}" + (f" and {len(extra) - 8} more" if len(extra) > 8 else ""))
    if not missing and not extra:
        moved = [i for i, (a, b) in enumerate(zip(expected, given)) if a != b]
        parts.append(f"same names in another order (first difference at index {moved[0]})" if moved else "different ids")
    return "; ".join(parts)


def _manifest_text(manifest: dict, path: Path) -> str:
    """A manifest checked by its typed model, as the file holds it."""
    from promptgen.manifests import manifest_text  # heavy: pydantic, kept out of start-up

    return manifest_text(manifest, path)


def _read_manifest(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8") or "{}")
    except ValueError:
        log.warning("manifest %s is unreadable", path)
        return {"status": "unreadable"}
    if isinstance(data, dict) and data:  # {}, an empty file: a reservation a crash cut short ("unreadable")
        from promptgen.manifests import check_manifest  # heavy: pydantic, kept out of start-up

        check_manifest(data, path)
    return data if isinstance(data, dict) else {"status": "unreadable"}


class SetLock:
    """One writing run per set at a time: `.writing.lock` in the set's folder, held for the whole
    run, its note the writer's pid, start time and command. The kernel drops the lock when its
    process dies, so a lock file with a note that nobody holds was left by a killed run: it is
    taken over, with a warning."""

    FILE = ".writing.lock"

    def __init__(self, lock: LockFile) -> None:
        self._lock: LockFile | None = lock

    @classmethod
    def acquire(cls, directory: Path, label: str, wait: bool) -> "SetLock":
        lock = LockFile(directory / cls.FILE)
        if not lock.try_acquire():
            holder = describe_holder(lock.read_note())
            if not wait:
                lock.release()
                raise PromptgenError(f"{label} is being written by another promptgen run ({holder})",
                                     "wait for it to finish, or rerun with --wait to start when it does")
            log.warning("%s is being written by another promptgen run (%s); waiting for it to finish", label, holder)
            lock.wait(poll_interval=0.2)
        set_lock = cls(lock)
        try:
            left = describe_holder(lock.read_note())
            if left != "unknown":
                log.warning("%s: taking over a lock left by a run that ended without releasing it (%s)", label, left)
            lock.write_note(holder_note())
        except BaseException:
            set_lock.release()
            raise
        return set_lock

    def release(self) -> None:
        if self._lock is None:
            return
        lock, self._lock = self._lock, None
        try:
            lock.write_note("")  # an empty file: released cleanly
        except OSError:
            pass  # the lock is still let go below; the next run only warns about the note
        finally:
            lock.release()


class VersionWriter:
    """Owns one version while it is written: holds its lock (and its set's), appends to its journal,
    finishes it."""

    def __init__(self, info: VersionInfo, set_lock: SetLock | None = None,
                 on_finished: Callable[[VersionInfo], None] | None = None) -> None:
        self.info = info
        self._set_lock = set_lock
        self._on_finished = on_finished
        self._lock: LockFile | None = None
        self._journal: Any = None

    def __enter__(self) -> "VersionWriter":
        self.info.directory.mkdir(parents=True, exist_ok=True)
        lock = LockFile(self.info.lock_path)
        if not lock.try_acquire():
            lock.release()
            self.release_set()
            raise PromptgenError(f"{self.info.ref} is being written by another promptgen process",
                                 "wait for it to finish, or stop it and rerun with --resume")
        self._lock = lock
        return self

    def __exit__(self, *exc: object) -> None:
        """Releases both locks whatever fails on the way (a journal that cannot flush on a full disk)."""
        try:
            if self._journal is not None:
                journal, self._journal = self._journal, None
                journal.close()
        finally:
            try:
                if self._lock is not None:
                    lock, self._lock = self._lock, None
                    lock.release()
            finally:
                self.release_set()

    def release_set(self) -> None:
        """Let the next writer of the set in (also for a writer that was made but never entered)."""
        if self._set_lock is not None:
            set_lock, self._set_lock = self._set_lock, None
            set_lock.release()

    def write_manifest(self, manifest: dict) -> None:
        atomic_write_text(self.info.manifest_path, _manifest_text(manifest, self.info.manifest_path), durable=True)
        self.info.manifest = manifest

    def read_journal(self) -> list[dict]:
        """Entries already written; a torn last line (from a kill mid-write) is dropped with a warning."""
        path = self.info.journal_path
        if not path.exists():
            return []
        raw = path.read_bytes()
        entries, good_bytes = [], 0
        for line in raw.splitlines(keepends=True):
            try:
                if not line.endswith(b"\n"):
                    raise ValueError("no newline")
                entries.append(json.loads(line))
            except ValueError:
                log.warning("%s: dropping a torn last line (%d bytes) left by an interrupted run",
                            path.name, len(raw) - good_bytes)
                with open(path, "r+b") as handle:
                    handle.truncate(good_bytes)
                break
            good_bytes += len(line)
        return entries

    def append(self, entry: dict) -> None:
        if self._journal is None:
            self._journal = open(self.info.journal_path, "a", encoding="utf-8")
        self._journal.write(json.dumps(entry, ensure_ascii=False) + "\n")
        self._journal.flush()

    def finish(self, records: list[dict], manifest: dict) -> VersionInfo:
        """Write the records (canonical order is the caller's) and the final manifest."""
        from promptgen.records import records_text  # heavy: pydantic, kept out of start-up

        text = records_text(number_repeats(records), self.info.records_path)
        atomic_write_text(self.info.records_path, text, durable=True)
        manifest = {**manifest, "finished": utc_now(), "records_file": self.info.records_path.name,
                    "records_sha256": sha256_file(self.info.records_path)}
        self.write_manifest(manifest)
        if self._on_finished is not None:
            self._on_finished(self.info)
        if manifest.get("status") == "complete":
            for path in (self.info.records_path, self.info.manifest_path):
                path.chmod(0o444)
            self.info.lock_path.unlink(missing_ok=True)
        return self.info
