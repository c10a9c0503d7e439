"""io.py: atomic writes keep the umask's mode and leave nothing behind; stable hashes."""

import os
import stat
import subprocess
import sys

import pytest

from quantconf.errors import QuantconfError
from quantconf.io import (atomic_directory, atomic_write_bytes, atomic_write_json, ensure_writable_dir, hash_files,
                          read_optional_json, stable_hash, clean_stale_temp)


def test_atomic_writes_get_the_umask_mode_not_private(tmp_path):
    """tempfile makes 0600 files and 0700 directories; results must get what open()/mkdir() would."""
    old = os.umask(0o022)
    try:
        atomic_write_bytes(tmp_path / "a.json", b"{}")
        with atomic_directory(tmp_path / "d") as d:
            (d / "x").write_text("x")
        os.umask(0o077)
        atomic_write_bytes(tmp_path / "private.json", b"{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "private.json").stat().st_mode) == 0o600
    assert (tmp_path / "a.json").read_bytes() == b"{}" and (tmp_path / "d" / "x").read_text() == "x"


def test_atomic_directory_leaves_target_untouched_on_error(tmp_path):
    target = tmp_path / "ckpt"
    target.mkdir()
    (target / "old").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_directory(target) as tmp:
            (tmp / "new").write_text("new")
            raise RuntimeError("killed")
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"] and (target / "old").read_text() == "old"


def test_json_helpers_and_hashes(tmp_path):
    atomic_write_json(tmp_path / "a.json", {"b": 1, "a": [1, 2]})
    assert (tmp_path / "a.json").read_text() == '{\n  "a": [\n    1,\n    2\n  ],\n  "b": 1\n}\n'
    assert read_optional_json(tmp_path / "missing.json", "fix") == {}
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(QuantconfError, match="bad.json is corrupt; re-run it"):
        read_optional_json(tmp_path / "bad.json", "re-run it")
    assert stable_hash({"a": 1, "b": 2}) == stable_hash({"b": 2, "a": 1}) != stable_hash({"a": 1, "b": 3})
    (tmp_path / "x").write_bytes(b"x")
    (tmp_path / "y").write_bytes(b"y")
    assert hash_files([tmp_path / "x", tmp_path / "y"]) == hash_files([tmp_path / "y", tmp_path / "x"])


def test_ensure_writable_dir_refuses_a_file(tmp_path):
    (tmp_path / "f").write_text("")
    with pytest.raises(QuantconfError, match="cannot write to output dir") as e:
        ensure_writable_dir(tmp_path / "f" / "sub")
    assert e.value.param == "out"
    assert ensure_writable_dir(tmp_path / "new" / "deep").is_dir()


def test_stale_temp_entries_of_dead_processes_are_removed(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale_dir = tmp_path / f".ckpt.tmp-{dead.pid}-abc"
    stale_dir.mkdir()
    (stale_dir / "model.safetensors").write_bytes(b"x" * 100)
    stale_file = tmp_path / f".summary.json.{dead.pid}.xyz.tmp"
    stale_file.write_text("{")
    live_dir = tmp_path / f".other.tmp-{os.getpid()}-def"
    live_dir.mkdir()
    keep = tmp_path / ".not-ours"
    keep.mkdir()
    removed = clean_stale_temp(tmp_path)
    assert sorted(p.name for p in removed) == sorted([stale_dir.name, stale_file.name])
    assert live_dir.exists() and keep.exists() and not stale_dir.exists() and not stale_file.exists()


def test_temp_names_carry_the_owner_pid(tmp_path):
    with atomic_directory(tmp_path / "ckpt") as tmp:
        assert tmp.name.startswith(f".ckpt.tmp-{os.getpid()}-")
