"""Helpers shared by the benchmark scripts: run a Python snippet in a fresh process, time it,
and read its peak RSS (each measurement gets its own process so RSS is not shared)."""

import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


PRELUDE = """
import json as _json, resource as _resource
def emit(d):
    d["peak_rss_mib"] = round(_resource.getrusage(_resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print(_json.dumps(d))
"""


def run_child(code: str, env=None) -> dict:
    """Run `code` in a new interpreter; it must end with emit({...}). Adds wall_s; the child
    reports its own peak RSS (ru_maxrss of that process)."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", PRELUDE + code], capture_output=True, text=True, env=env, cwd=ROOT)
    wall = time.perf_counter() - t0
    if proc.returncode:
        sys.stderr.write(proc.stderr[-3000:])
        raise SystemExit(f"child failed with {proc.returncode}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["wall_s"] = round(wall, 2)
    return out
