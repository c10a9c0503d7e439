"""Report re-render time: `quantconf report DIR` on a finished study (by default the demo study, `make demo`'s
runs/demo), as a user runs it (a new process: start, imports, reading the steps, plots, HTML), against a process
that only starts Python and imports quantconf, alternating --rounds times. Prints min and median of both and
the share of the report's time the import takes. The report must leave summary.json and questions.csv
byte-identical between rounds (it only renders), or the script exits 1.
Usage: .venv/bin/python benchmarks/report_speed.py [STUDY_DIR] [--rounds 7]
"""

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _common import ROOT


def timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("study_dir", nargs="?", default=str(ROOT / "runs" / "demo"))
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    study = Path(args.study_dir)
    if not (study / "study.yaml").is_file():
        print(f"{study} is not a finished study (run `make demo` first, or name a study directory)")
        return 2
    quantconf = str(Path(sys.executable).with_name("quantconf"))
    outputs = None
    report, imports = [], []
    for _ in range(args.rounds):
        imports.append(timed([sys.executable, "-c", "import quantconf"]))
        report.append(timed([quantconf, "report", str(study)]))
        now = [(study / name).read_bytes() for name in ("summary.json", "questions.csv")]
        if outputs is not None and now != outputs:
            print("summary.json or questions.csv changed between two re-renders")
            return 1
        outputs = now
    print(f"study: {study} ({args.rounds} rounds, alternating)")
    print(f"quantconf report   min {min(report):.2f} s  median {statistics.median(report):.2f} s")
    print(f"import quantconf   min {min(imports):.2f} s  median {statistics.median(imports):.2f} s")
    print(f"import share of the report: {min(imports) / min(report):.0%} (min), "
          f"{statistics.median(imports) / statistics.median(report):.0%} (median)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
