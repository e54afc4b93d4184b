"""One writing run per set: a second run stops with a clear message or, with --wait, waits; a lock
left by a killed run is taken over."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import textwrap
import time
from pathlib import Path

import pytest

from promptgen.errors import PromptgenError
from promptgen.store import SetLock, Store
from tests.conftest import hold_lock, run_cli

HOLDER = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    from promptgen.store import Store
    store = Store(Path(sys.argv[1]))
    writer = store.new_version("cifar10", "wordnet", {"stage": "test"}, store.classes("cifar10"))
    Path(sys.argv[2]).write_text(str(os.getpid()))
    if sys.argv[3] == "kill":
        os.kill(os.getpid(), 9)
    time.sleep(float(sys.argv[3]))
    with writer:
        writer.finish([], {**writer.info.manifest, "status": "complete"})
""")


def hold(root: Path, tmp_path: Path, mode: str) -> subprocess.Popen:
    """A process that reserves cifar10/wordnet's next version and holds the set for `mode` seconds
    (or kills itself with SIGKILL while holding it)."""
    return hold_lock(HOLDER, root, tmp_path, mode)


def versions(root: Path) -> list[str]:
    folder = root / "prompts" / "cifar10" / "wordnet"
    return sorted(p.name for p in folder.glob("v*.manifest.json"))


@pytest.mark.subprocess
def test_a_second_writer_is_refused_with_who_holds_the_set_and_reserves_nothing(root, tmp_path):
    holder = hold(root, tmp_path, "30")
    try:
        result = run_cli("describe", "cifar10", "--source", "wordnet", root=root)
        assert result.exit_code == 2
        assert f"cifar10/wordnet is being written by another promptgen run (pid {holder.pid}" in result.stderr
        assert "fix: wait for it to finish, or rerun with --wait" in result.stderr
        assert versions(root) == ["v1.manifest.json"], "the refused run must not reserve a version"
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.subprocess
def test_wait_starts_when_the_first_writer_finishes(root, tmp_path):
    holder = hold(root, tmp_path, "1.5")
    started = time.monotonic()
    result = run_cli("describe", "cifar10", "--source", "wordnet", "--wait", root=root)
    waited = time.monotonic() - started
    assert holder.wait(timeout=30) == 0
    assert result.exit_code == 0, result.output
    assert "is being written by another promptgen run" in result.stderr and "waiting for it to finish" in result.stderr
    assert waited >= 0.5, "the second run did not wait"
    assert versions(root) == ["v1.manifest.json", "v2.manifest.json"]
    manifest = json.loads((root / "prompts" / "cifar10" / "wordnet" / "v2.manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["parent"] == "cifar10/wordnet@v1"
    assert (root / "prompts" / "cifar10" / "wordnet" / SetLock.FILE).read_text() == "", "released cleanly"


@pytest.mark.subprocess
def test_a_lock_left_by_a_killed_run_is_taken_over(root, tmp_path):
    holder = hold(root, tmp_path, "kill")
    assert holder.wait(timeout=30) == -signal.SIGKILL
    lock = root / "prompts" / "cifar10" / "wordnet" / SetLock.FILE
    assert json.loads(lock.read_text())["pid"] == holder.pid  # the dead run's note is still there
    result = run_cli("describe", "cifar10", "--source", "wordnet", root=root)
    assert result.exit_code == 0, result.output
    assert "taking over a lock left by a run that ended without releasing it" in result.stderr
    assert f"pid {holder.pid}" in result.stderr
    assert lock.read_text() == ""
    # the killed run's reserved version is reported as interrupted; the new run wrote the next one
    assert versions(root) == ["v1.manifest.json", "v2.manifest.json"]
    assert Store(root).list_versions("cifar10", "wordnet")[0].status == "interrupted"


def test_the_set_lock_is_released_when_the_run_fails(root):
    store = Store(root)
    with pytest.raises(RuntimeError):
        with store.new_version("cifar10", "wordnet", {"stage": "test"}, store.classes("cifar10")):
            raise RuntimeError("boom")
    # the next writer gets the set at once, and no stale-lock warning: the file was emptied
    lock = root / "prompts" / "cifar10" / "wordnet" / SetLock.FILE
    assert lock.read_text() == ""
    with store.new_version("cifar10", "wordnet", {"stage": "test"}) as writer:
        assert json.loads(lock.read_text())["pid"] == os.getpid()
        with pytest.raises(PromptgenError, match="being written by another promptgen run"):
            Store(root).new_version("cifar10", "wordnet", {"stage": "test"})
        writer.finish([], {**writer.info.manifest, "status": "complete"})
    assert lock.read_text() == ""


def test_resume_with_wait_sees_what_the_run_it_waited_for_finished(root):
    """--resume --wait must not continue (and rewrite) a version the first run completed meanwhile."""
    import threading

    store = Store(root)
    writer = store.new_version("cifar10", "wordnet", {"stage": "test"}, store.classes("cifar10"))
    with writer:
        writer.finish([], {**writer.info.manifest, "status": "partial"})
    first = store.resume_version("cifar10", "wordnet")
    outcome = {}

    def second() -> None:
        try:
            Store(root, wait_for_writers=True).resume_version("cifar10", "wordnet")
        except PromptgenError as exc:
            outcome["error"] = exc.message

    thread = threading.Thread(target=second)
    with first:
        thread.start()
        time.sleep(0.5)
        assert thread.is_alive(), "the second run did not wait"
        first.finish([], {**first.info.manifest, "status": "complete"})
    thread.join(timeout=30)
    assert "nothing to resume in cifar10/wordnet: latest is v1 (complete)" in outcome["error"]


def test_a_journal_that_cannot_flush_still_releases_both_locks(root):
    store = Store(root)
    writer = store.new_version("cifar10", "wordnet", {"stage": "test"}, store.classes("cifar10"))

    class FullDisk:
        def write(self, text):
            return len(text)

        def flush(self):
            pass

        def close(self):
            raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        with writer:
            writer._journal = FullDisk()
    again = Store(root).new_version("cifar10", "wordnet", {"stage": "test"})  # neither lock is held any more
    with again:
        assert again.info.version == 2
