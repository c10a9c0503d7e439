"""Files on disk: atomic writes, stable hashes, package versions, writable output directories.

Every file quantconf writes goes through `atomic_write_bytes` (temp file in the same directory, then
`os.replace`) or `atomic_directory`, so a killed run never leaves a half-written file behind and
readers see either the old file or the new one.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import platform
import shutil
import tempfile
from importlib import metadata
from pathlib import Path

import pandas as pd

from quantconf._version import __version__
from quantconf.errors import QuantconfError

RECORDED_PACKAGES = ["torch", "transformers", "gguf", "numpy", "scipy", "pandas", "gptqmodel", "datasets"]


def _umask_mode(full: int) -> int:
    """The mode open()/mkdir() would give (full & ~umask): tempfile creates private 0600/0700
    entries, which would leave reports and results unreadable to the user's group."""
    umask = os.umask(0)
    os.umask(umask)
    return full & ~umask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, _umask_mode(0o666))
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_directory(target: Path):
    """Build a directory under a temporary name beside `target`; on success it replaces `target`,
    on any error (or Ctrl-C) the temporary directory is removed and `target` is left as it was."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        os.chmod(tmp, _umask_mode(0o777))
        yield tmp
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


def atomic_write_parquet(path: Path, df: pd.DataFrame) -> None:
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    atomic_write_bytes(Path(path), buf.getvalue())


def read_optional_json(path: Path, fix: str) -> dict:
    """The JSON object in `path`, {} if the file does not exist; a corrupt file raises naming `fix`."""
    path = Path(path)
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        raise QuantconfError(f"{path} is corrupt; {fix}") from None


def ensure_writable_dir(out: Path) -> Path:
    """Create `out` if needed and check that files can be written in it."""
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".quantconf-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise QuantconfError(f"cannot write to output dir {out} ({e.strerror}); choose another out dir",
                             param="out") from None
    return out


@contextlib.contextmanager
def working_directory(path: Path):
    """Run a block in another working directory (GPTQModel writes ./logs/ wherever it runs).
    Paths used inside the block must be absolute: a relative one would now point elsewhere."""
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "quantconf": __version__}
    for name in RECORDED_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def stable_hash(obj) -> str:
    """sha256 of the canonical JSON of `obj`: the content address of study steps and reuse keys."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def sha256_file(path: Path, _memo: dict = {}) -> str:  # noqa: B006 - per-process memo by (path, size, mtime)
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _memo:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                h.update(chunk)
        _memo[key] = h.hexdigest()
    return _memo[key]


def hash_files(files: list[Path]) -> str:
    """One hash of several files (names and contents), independent of their order."""
    h = hashlib.sha256()
    for f in sorted(files):
        h.update(f.name.encode())
        h.update(sha256_file(f).encode())
    return h.hexdigest()
