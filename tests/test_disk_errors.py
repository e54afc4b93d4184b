"""A full disk or a read-only folder: a clear error (exit 4), and the versions already written stay
intact. Simulated by making the store's writes fail: these machines run as root, which ignores
folder permissions."""

from __future__ import annotations

import errno
import hashlib

import pytest

import promptgen.store


def snapshot(root):
    folder = root / "prompts" / "cifar10" / "wordnet"
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir() if p.name.startswith("v1.")}


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS])
@pytest.mark.parametrize("fail_at", ["reserve", "records"])
def test_a_refused_write_is_a_clear_error_and_leaves_earlier_versions_intact(cli, root, monkeypatch, code, fail_at):
    assert cli("describe", "cifar10", "--source", "wordnet").exit_code == 0
    before = snapshot(root)
    real = promptgen.store.atomic_write_text

    def refusing(path, text, durable=False):
        if (fail_at == "reserve" and path.name.startswith(".v2.manifest")) or \
                (fail_at == "records" and path.name == "v2.jsonl"):
            raise OSError(code, __import__("os").strerror(code), str(path))
        return real(path, text, durable)

    monkeypatch.setattr(promptgen.store, "atomic_write_text", refusing)
    result = cli("describe", "cifar10", "--source", "wordnet")
    assert result.exit_code == 4, result.output
    assert f"error: could not write {root}" in result.stderr and __import__("os").strerror(code) in result.stderr
    assert "fix: free some space or make the folder writable" in result.stderr
    assert "Traceback" not in result.output
    assert snapshot(root) == before, "the complete version was touched"
    from promptgen.runlog import read_runs

    assert read_runs(root)[-1]["status"] == "not written" and read_runs(root)[-1]["exit_code"] == 4
    monkeypatch.setattr(promptgen.store, "atomic_write_text", real)
    assert cli("describe", "cifar10", "--source", "wordnet").exit_code == 0  # and the next run works
    versions = promptgen.store.Store(root).list_versions("cifar10", "wordnet")
    assert versions[0].status == "complete" and versions[-1].status == "complete"


def test_other_os_errors_are_not_disguised(cli, root, monkeypatch):
    def broken(*args, **kwargs):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(promptgen.store, "atomic_write_text", broken)
    with pytest.raises(OSError, match="Input/output error"):
        cli("describe", "cifar10", "--source", "wordnet")
