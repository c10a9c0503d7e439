"""Mutation score per file from a `mutmut run` (the `make mutation` target).

Reads mutmut's result files (`mutants/<source>.py.meta`), leaves out the mutants listed as equivalent
in pyproject.toml (`[tool.quantconf.equivalent_mutants]`: name = "why it cannot change behaviour"),
and prints killed / (killed + survived + no tests) per file, with the survivors' names.
Usage: .venv/bin/python benchmarks/mutation_score.py [--show-survivors]
"""

import argparse
import json
import tomllib
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KILLED = {1, 3, 36, -24, 24, 152, 255, 37}  # failed tests, pytest internal error, timeouts, type checks


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--show-survivors", action="store_true")
    args = ap.parse_args()
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    equivalent = config.get("tool", {}).get("quantconf", {}).get("equivalent_mutants", {})
    metas = sorted((ROOT / "mutants").rglob("*.py.meta"))
    if not metas:
        raise SystemExit("no mutmut results under mutants/; run `make mutation` first")
    for meta in metas:
        codes = json.loads(meta.read_text()).get("exit_code_by_key", {})
        counted = {k: v for k, v in codes.items() if k not in equivalent and v is not None and v not in (34,)}
        status = Counter("killed" if v in KILLED else "survived" if v == 0 else "no tests" if v in (5, 33)
                         else "other" for v in counted.values())
        total = sum(status.values())
        score = 100 * status["killed"] / total if total else float("nan")
        name = meta.relative_to(ROOT / "mutants").with_suffix("")
        print(f"{name}: {score:.1f}% killed ({status['killed']}/{total}; survived {status['survived']}, "
              f"no tests {status['no tests']}, other {status['other']}; {len(codes) - len(counted)} excluded "
              f"as equivalent or not run)")
        if args.show_survivors:
            for k, v in sorted(counted.items()):
                if v not in KILLED:
                    print(f"    {k}")


if __name__ == "__main__":
    main()
