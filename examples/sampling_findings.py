"""The sampling-based confidence findings in docs/generation.md, generated from a study's outputs so numbers and
text cannot drift.

    .venv/bin/quantconf study examples/sampling.yaml --out runs/sampling
    .venv/bin/python examples/sampling_findings.py runs/sampling      # extract + rewrite the docs block
    .venv/bin/python examples/sampling_findings.py                    # rewrite the block from the extract

With a study directory it first writes `examples/results/sampling.json`: the facts the findings need, taken from
that study's summary.json and study.yaml (committed, so the page can be regenerated and checked without
re-running the study). It then renders the findings (per task a table of every confidence measure's AUROC and
PRR per variant, and a reading whose sentences follow the intervals) and replaces the page's block between the
two markers below. `tests/test_findings.py` fails when the page's block differs from what this script renders.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXTRACT = ROOT / "examples" / "results" / "sampling.json"
PAGE = ROOT / "docs" / "generation.md"
START, END = "<!-- sampling-findings:start (examples/sampling_findings.py) -->", "<!-- sampling-findings:end -->"
SAMPLED = ("greedy_agreement", "neg_semantic_entropy", "neg_discrete_semantic_entropy", "neg_num_semantic_sets",
           "neg_eigv", "neg_degree", "neg_eccentricity", "neg_mc_sequence_entropy", "neg_mc_normalized_entropy",
           "lexical_similarity")
KEYS = ("auroc", "auroc_lo", "auroc_hi", "prr", "prr_lo", "prr_hi", "delta_auroc", "delta_auroc_lo", "delta_auroc_hi",
        "delta_prr", "delta_prr_lo", "delta_prr_hi", "n")


def extract(study_dir: Path) -> dict:
    """The facts the findings use, from a finished study's summary.json and study.yaml."""
    summary = json.loads((study_dir / "summary.json").read_text())
    rows = [{"variant": r["variant"], "task": r["task"], "measure": r["measure"], **{k: r.get(k) for k in KEYS}}
            for r in summary["confidence_measures"]]
    acc = {f"{m['variant']}|{m['task']}": m["acc"] for m in summary["metrics"]}
    return {"config": (study_dir / "study.yaml").read_text(), "measures": rows, "acc": acc,
            "changed": {f"{c['variant']}|{c['task']}": c.get("answer_changed") for c in summary["comparisons"]}}


def _f(x, fmt=".2f") -> str:
    return "—" if x is None or x != x else f"{x:{fmt}}"


def _ci(r: dict, k: str, fmt=".2f") -> str:
    lo, hi = r.get(f"{k}_lo"), r.get(f"{k}_hi")
    return "" if lo is None or lo != lo else f" [{lo:{fmt}}, {hi:{fmt}}]"


def render(facts: dict) -> str:
    rows = facts["measures"]
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    full, quants = variants[0], variants[1:]
    lines = []
    for task in dict.fromkeys(r["task"] for r in rows):
        by = {(r["variant"], r["measure"]): r for r in rows if r["task"] == task}
        measures = list(dict.fromkeys(m for (_, m) in by))
        n = by[(full, measures[0])]["n"]
        accs = ", ".join(f"{v} {facts['acc'][f'{v}|{task}']:.3f}" for v in variants)
        lines += [f"**{task}** ({n} prompts; accuracy {accs}). AUROC of each measure as a detector of a right answer "
                  "(0.5: chance) and PRR (0: chance, 1: perfect), 95% bootstrap intervals over prompts; Δ: quantized "
                  "− full AUROC with its paired interval.", "",
                  "| measure | " + " | ".join(f"{v} AUROC | {v} PRR" for v in [full]) + " | "
                  + " | ".join(f"{v} AUROC | Δ AUROC" for v in quants) + " |",
                  "| --- |" + " --- | --- |" * (1 + len(quants))]
        for m in measures:
            f = by[(full, m)]
            cells = [f"{_f(f['auroc'])}{_ci(f, 'auroc')}", f"{_f(f['prr'])}{_ci(f, 'prr')}"]
            for v in quants:
                q = by.get((v, m), {})
                cells += [f"{_f(q.get('auroc'))}", f"{_f(q.get('delta_auroc'), '+.2f')}{_ci(q, 'delta_auroc', '+.2f')}"]
            lines.append(f"| `{m}`{' (sampled)' if m in SAMPLED else ''} | " + " | ".join(cells) + " |")
        detect = [m for m in measures if (by[(full, m)].get("auroc_lo") or 0) > 0.5]
        best = max(measures, key=lambda m: by[(full, m)]["auroc"] if by[(full, m)]["auroc"] == by[(full, m)]["auroc"]
                   else -1)
        compared = [(v, m) for v in quants for m in measures if by.get((v, m))
                    and by[(v, m)].get("delta_auroc_lo") is not None and by[(v, m)]["delta_auroc_lo"] == by[(v, m)]["delta_auroc_lo"]]
        moved = [(v, m) for v, m in compared if by[(v, m)]["delta_auroc_lo"] > 0 or by[(v, m)]["delta_auroc_hi"] < 0]
        sampled_detect = [m for m in detect if m in SAMPLED]
        lines += ["", f"Reading ({task}): on the full model, {len(detect)} of {len(measures)} measures detect wrong "
                  f"answers (AUROC interval above 0.5)"
                  + (f": {', '.join(f'`{m}`' for m in detect)}" if detect else "")
                  + f"; {len(sampled_detect)} of them sampling-based. The highest AUROC is `{best}`'s "
                  f"({by[(full, best)]['auroc']:.2f}). "
                  + (f"Quantization moved the AUROC of {len(moved)} (variant, measure) pairs beyond their paired "
                     "interval: " + ", ".join(f"{v} `{m}` ({by[(v, m)]['delta_auroc']:+.2f})" for v, m in moved) + "."
                     if moved else "No quantized variant changed any measure's AUROC beyond its paired 95% "
                     "interval: at this number of prompts, quantization's effect on how well these measures "
                     "detect wrong answers is smaller than the sampling noise of the comparison.")
                  + f" Of {len(compared)} paired intervals here, about {0.05 * len(compared):.1f} would exclude 0 by "
                  "chance alone if quantization changed nothing (no multiplicity adjustment); each model's AUROC is "
                  "against its own answers' correctness.", ""]
    return "\n".join(lines).rstrip() + "\n"


def replace_block(page: str, block: str) -> str:
    start, end = page.index(START), page.index(END)
    return page[:start + len(START)] + "\n" + block + page[end:]


def main(argv: list[str]) -> int:
    if argv:
        facts = extract(Path(argv[0]))
        EXTRACT.parent.mkdir(parents=True, exist_ok=True)
        EXTRACT.write_text(json.dumps(facts, indent=1, sort_keys=True) + "\n")
    facts = json.loads(EXTRACT.read_text())
    PAGE.write_text(replace_block(PAGE.read_text(), render(facts)))
    print(f"wrote {PAGE.relative_to(ROOT)} from {EXTRACT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
