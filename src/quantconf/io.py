"""Files on disk: atomic writes, locks, stale-temp cleanup, stable hashes, package versions.

Every file quantconf writes goes through `atomic_write_bytes` (temp file in the same directory, then
`os.replace`) or `atomic_directory`, so a killed run never leaves a half-written file behind and
readers see either the old file or the new one. Temp names carry the writer's pid
(`.<name>.<pid>.<random>.tmp`, `.<name>.tmp-<pid>-<random>`), so `clean_stale_temp` can remove
what a killed process left, and only that. `locked` serialises writers of one output (an flock,
released by the kernel if the holder dies) and says who holds it.
"""

from __future__ import annotations

import contextlib
import contextvars
import fcntl
import hashlib
import io
import json
import os
import platform
import re
import shutil
import sys
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


def check_writable_files(*paths: Path) -> None:
    """Refuse, before anything is written, a target file path that is a directory (or under a file)."""
    for path in map(Path, paths):
        if path.is_dir():
            raise QuantconfError(f"{path} is a directory, where quantconf writes a file; move it away (nothing "
                                 "was written)")
        if any(parent.exists() and not parent.is_dir() for parent in path.parents):
            raise QuantconfError(f"{path}: a part of that path is a file, not a directory (nothing was written)")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    check_writable_files(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
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


# Checkpoint files from before quantize.json listed what it wrote: what a quantizer may leave there.
LEGACY_CHECKPOINT_FILE = re.compile(r"^(.+\.(safetensors|json|gguf|model)|library\.log|merges\.txt|vocab\.txt)$")


def _our_hidden_entry(name: str) -> bool:
    """Our lock, probe and temp entries (never a user's dotfile)."""
    return (name.endswith(".lock") and name.startswith(".")) or name == ".quantconf-write-test" or bool(
        TEMP_FILE.match(name) or TEMP_DIR.match(name))


def protected_directory(path: Path) -> bool:
    """The working directory, one of its ancestors, the home directory or a filesystem root: never removed."""
    resolved, cwd = Path(path).resolve(), Path.cwd().resolve()
    return resolved == cwd or resolved in cwd.parents or resolved == Path.home().resolve() or resolved.parent == resolved


def check_ours_to_replace(target: Path, marker: str, what: str, param: str = "out") -> None:
    """The one rule before any directory is replaced: quantconf deletes only what it can prove it wrote.
    `target` may go if it is empty (but for our own lock/temp entries), or if it holds `marker` (e.g.
    quantize.json) and every other entry is one that marker lists in "files" (older records without
    that list: files a checkpoint holds by name). Never the working directory, an ancestor of it, the
    home directory or a root. Otherwise a one-line QuantconfError, and nothing is touched."""
    target = Path(target)
    if not target.exists() and not target.is_symlink():
        return
    if protected_directory(target):
        raise QuantconfError(f"{param} {target} is the working directory, one of its parents or the home directory; "
                             f"quantconf never deletes it: choose a new {param} dir", param=param)
    if target.is_symlink() or not target.is_dir():
        raise QuantconfError(f"{param} {target} is not a directory quantconf wrote; choose another {param} dir",
                             param=param)
    entries = sorted(p.name for p in target.iterdir() if not _our_hidden_entry(p.name))
    if not entries:
        return
    if marker not in entries:
        raise QuantconfError(
            f"{param} {target} is not a quantconf {what} (it has no {marker}) and --overwrite only replaces what "
            f"quantconf wrote; choose a new {param} dir, or remove {target} yourself", param=param)
    try:
        listed = json.loads((target / marker).read_text()).get("files")
    except (OSError, ValueError, AttributeError):
        listed = None
    foreign = [e for e in entries if e != marker and (e not in listed if isinstance(listed, list)
                                                       else not LEGACY_CHECKPOINT_FILE.match(e))]
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise QuantconfError(f"{param} {target} holds files quantconf did not write ({shown}); --overwrite only "
                             f"replaces a {what} it wrote: choose a new {param} dir, or move those files away",
                             param=param)


@contextlib.contextmanager
def atomic_directory(target: Path):
    """Build a directory under a temporary name beside `target`; on success it replaces `target`,
    on any error (or Ctrl-C) the temporary directory is removed and `target` is left as it was."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-{os.getpid()}-", dir=target.parent))
    try:
        os.chmod(tmp, _umask_mode(0o777))
        yield tmp
        if target.exists():
            if protected_directory(target):  # a last guard: callers check with check_ours_to_replace first
                raise QuantconfError(f"{target} is the working directory or a parent of it; not replacing it")
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


TEMP_FILE = re.compile(r"^\..+\.(?P<pid>\d+)\.[^.]+\.tmp$")
TEMP_DIR = re.compile(r"^\..+\.tmp-(?P<pid>\d+)-[^.]+$")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def clean_stale_temp(folder: Path, recursive: bool = True) -> list[Path]:
    """Remove temp files/dirs under `folder` whose writer process is gone (its pid is in the name);
    a live writer's temp entries, and anything not named like ours, are left alone. Returns what went."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for entry in sorted(folder.rglob(".*") if recursive else folder.glob(".*")):
        m = (TEMP_DIR.match(entry.name) if entry.is_dir() else TEMP_FILE.match(entry.name))
        if m is None or pid_alive(int(m.group("pid"))) or not entry.exists():
            continue
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


@contextlib.contextmanager
def locked(path: Path, log=None, what: str | None = None):
    """Hold an exclusive lock on `path` (created if needed) for the block. If another process (or
    another open of the same file) holds it, say who (`log`) and wait; the kernel releases the lock
    of a process that dies, so a killed holder never blocks anyone."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            if log:
                log(f"waiting for {what or path.name} (being written by pid {holder})")
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


@contextlib.contextmanager
def fds_to(file):
    """Send everything written to file descriptors 1 and 2 (what C extensions and libraries print,
    which sys.stdout redirection misses) into the open binary `file` for the block."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    os.dup2(file.fileno(), 1)
    os.dup2(file.fileno(), 2)
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)


@contextlib.contextmanager
def library_output_to(path: Path | None):
    """Append what libraries print (their progress bars) to `path`; None: leave it on the terminal."""
    if path is None:
        yield
        return
    with open(path, "ab") as f, fds_to(f):
        yield


# Where captured library output goes: (log file or None, verbose). Set by the CLI for a command's --out
# (`library_output_log`); a notebook sets it the same way, or leaves it: then the output is dropped.
_LIBRARY_LOG: contextvars.ContextVar = contextvars.ContextVar("quantconf_library_log", default=(None, False))
LIBRARY_LOG_NAME = "quantconf.log"


@contextlib.contextmanager
def library_output_log(path: Path | None, verbose: bool = False):
    """For the block: what `captured_library_output` captures is appended to `path`; `verbose`: nothing is
    captured, libraries print to the console as they would."""
    token = _LIBRARY_LOG.set((Path(path) if path else None, verbose))
    try:
        yield
    finally:
        _LIBRARY_LOG.reset(token)


def _append_log(path: Path | None, data: bytes) -> None:
    if path is None or not data:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "ab") as log:
            log.write(data)
    except OSError:  # a log that cannot be written never fails the work
        pass


@contextlib.contextmanager
def captured_library_output():
    """Capture what a library prints (banners, INFO lines, load bars): into the log file the CLI set
    (`OUT/quantconf.log`), shown on stderr only if the block fails; with --verbose, not captured."""
    log, verbose = _LIBRARY_LOG.get()
    if verbose:
        yield
        return
    with tempfile.TemporaryFile() as f:
        try:
            with fds_to(f):
                yield
        except QuantconfError:  # our own one-line error already says what went wrong and how to fix it
            raise
        except BaseException:
            f.seek(0)
            sys.stderr.write(f.read().decode(errors="replace")[-4000:])
            raise
        finally:
            f.seek(0)
            _append_log(log, f.read())


def give_umask_modes(folder: Path) -> None:
    """Files and folders that libraries wrote privately (safetensors writes 0600) get the mode
    open()/mkdir() would give them, like every other result."""
    for p in Path(folder).rglob("*"):
        os.chmod(p, _umask_mode(0o777 if p.is_dir() else 0o666))


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


def atomic_write_parquet(path: Path, df: pd.DataFrame) -> None:
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    atomic_write_bytes(Path(path), buf.getvalue())


def read_jsonl(path: Path) -> list[dict]:
    """Rows of a jsonl file; a malformed line raises with file:line."""
    rows = []
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise QuantconfError(f"{path}:{lineno}: not UTF-8 ({e.reason} at byte {e.start}); "
                                     "save the file as UTF-8") from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise QuantconfError(f"{path}:{lineno}: malformed JSON ({e.msg}); fix or remove that line") from None
            except (ValueError, RecursionError) as e:  # a 5000-digit number, nesting deeper than Python recurses
                raise QuantconfError(f"{path}:{lineno}: unreadable JSON ({type(e).__name__}: {str(e)[:80]}); "
                                     "fix or remove that line") from None
            if not isinstance(row, dict):
                raise QuantconfError(f"{path}:{lineno}: expected a JSON object per line")
            rows.append(row)
    return rows


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
        if out.exists() and not out.is_dir():
            raise QuantconfError(f"out {out} is a file, not a directory; choose another out dir", param="out")
        out.mkdir(parents=True, exist_ok=True)
        # a probe of its own: with one shared name, a second writer starting in the same dir unlinked the
        # first one's probe and that run failed with "cannot write" (two `quantconf eval` into one dir)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".quantconf-write-test-"):
            pass
    except OSError as e:
        raise QuantconfError(f"cannot write to output dir {out} ({e.strerror}); choose another out dir",
                             param="out") from None
    return out


def remove_if_holds_nothing(folder: Path) -> bool:
    """Remove `folder` if it holds nothing but our hidden lock/probe/temp entries (a run that failed
    before writing any result); True if it went."""
    folder = Path(folder)
    if folder.is_dir() and all(p.name.startswith(".") or p.name == LIBRARY_LOG_NAME for p in folder.iterdir()):
        shutil.rmtree(folder, ignore_errors=True)
        return True
    return False


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
