"""promptgen.locks with real processes: two holders exclude each other, a refused one can name the
holder, and a lock whose holder died blocks nobody (its note stays for the message)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from promptgen.locks import LockFile, describe_holder, holder_note, is_locked
from tests.conftest import hold_lock

HOLDER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from promptgen.locks import LockFile, holder_note
    lock = LockFile(Path(sys.argv[1]))
    assert lock.try_acquire()
    lock.write_note(holder_note())
    Path(sys.argv[2]).write_text("held")
    if sys.argv[3] == "kill":
        import os, signal
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(float(sys.argv[3]))
    lock.write_note("")
    lock.release()
""")

# a plain flock, as the code before promptgen.locks took it (and as the pipeline test still does):
# a lockf/fcntl-style lock would not exclude it
PLAIN_FLOCK = textwrap.dedent("""
    import fcntl, sys, time
    from pathlib import Path
    handle = open(sys.argv[1], "a+")
    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    Path(sys.argv[2]).write_text("held")
    time.sleep(float(sys.argv[3]))
""")


def hold(tmp_path: Path, path: Path, mode: str, script: str = HOLDER) -> subprocess.Popen:
    """A process that takes the lock on `path` and keeps it `mode` seconds, or SIGKILLs itself."""
    return hold_lock(script, path, tmp_path, mode)


@pytest.mark.subprocess
def test_a_second_process_is_refused_and_can_name_the_holder(tmp_path):
    path = tmp_path / "x.lock"
    holder = hold(tmp_path, path, "30")
    lock = LockFile(path)
    try:
        assert is_locked(path)
        assert not lock.try_acquire()
        note = lock.read_note()
        assert json.loads(note)["pid"] == holder.pid
        assert describe_holder(note).startswith(f"pid {holder.pid}, started 20")
    finally:
        lock.release()
        holder.kill()
        holder.wait()
    assert not is_locked(path), "the kernel let go when the holder died"


@pytest.mark.subprocess
def test_waiting_starts_when_the_holder_lets_go(tmp_path):
    path = tmp_path / "x.lock"
    holder = hold(tmp_path, path, "1")
    lock = LockFile(path)
    started = time.monotonic()
    lock.wait(poll_interval=0.05)
    try:
        assert time.monotonic() - started >= 0.3, "the lock was taken while the holder had it"
        assert holder.wait(timeout=30) == 0
        assert lock.read_note() == "", "the holder emptied its note when it let go"
    finally:
        lock.release()


@pytest.mark.subprocess
def test_a_lock_whose_holder_was_killed_blocks_nobody_and_keeps_its_note(tmp_path):
    path = tmp_path / "x.lock"
    holder = hold(tmp_path, path, "kill")
    assert holder.wait(timeout=30) == -signal.SIGKILL
    assert not is_locked(path)
    lock = LockFile(path)
    try:
        assert lock.try_acquire()
        # taking the lock left the dead holder's note for the taker to report
        assert describe_holder(lock.read_note()).startswith(f"pid {holder.pid}, ")
    finally:
        lock.release()


@pytest.mark.subprocess
def test_a_plain_flock_of_another_process_excludes_and_is_excluded(tmp_path):
    path = tmp_path / "x.lock"
    other = hold(tmp_path, path, "30", PLAIN_FLOCK)
    try:
        assert is_locked(path)
    finally:
        other.kill()
        other.wait()
    lock = LockFile(path)
    assert lock.try_acquire()
    try:
        taker = subprocess.run([sys.executable, "-c", "import fcntl, sys\nh = open(sys.argv[1], 'a+')\n"
                                "fcntl.flock(h, fcntl.LOCK_EX | fcntl.LOCK_NB)", str(path)], capture_output=True)
        assert taker.returncode != 0 and b"BlockingIOError" in taker.stderr
    finally:
        lock.release()


def test_two_lock_files_in_one_process_exclude_each_other(tmp_path):
    """A lock is per open file: the status check of a version this process writes sees it held,
    and a second writer in another thread waits."""
    path = tmp_path / "x.lock"
    first = LockFile(path)
    assert first.try_acquire()
    first.write_note(holder_note())
    assert is_locked(path)
    second = LockFile(path)
    assert not second.try_acquire()
    assert describe_holder(second.read_note()).startswith(f"pid {os.getpid()}, ")
    took = threading.Event()
    thread = threading.Thread(target=lambda: (second.wait(poll_interval=0.05), took.set()))
    thread.start()
    time.sleep(0.3)
    assert not took.is_set(), "the second lock was taken while the first was held"
    first.release()
    thread.join(timeout=30)
    assert took.is_set()
    second.release()
    second.release()  # again: nothing to do
    assert not is_locked(path)


def test_is_locked_makes_no_file(tmp_path):
    assert not is_locked(tmp_path / "none.lock")
    assert not (tmp_path / "none.lock").exists()


def test_a_note_promptgen_did_not_write_names_nobody():
    assert describe_holder("") == "unknown"
    assert describe_holder("pid 12") == "unknown"
    assert describe_holder("[1, 2]") == "unknown"
