"""The noise-floor findings in docs/noise_floor.md are what examples/noise_floor_findings.py renders from the committed
extract of the study's summary.json: editing the numbers by hand, or regenerating the extract without
the page, fails here."""

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _findings():
    return _script("noise_floor_findings")


def test_findings_block_is_rendered_from_the_extract():
    f = _findings()
    if not f.EXTRACT.is_file():
        pytest.fail(f"{f.EXTRACT} missing: run examples/noise_floor_findings.py on the study directory")
    facts = json.loads(f.EXTRACT.read_text())
    readme = f.PAGE.read_text()
    assert f.replace_block(readme, f.render(facts)) == readme
    assert "limit: 500" in facts["config"] and all(x["n"] >= 500 for x in facts["floors"])


def test_sampling_findings_block_is_rendered_from_the_extract():
    """docs/generation.md's sampling findings are examples/sampling_findings.py's rendering of the committed extract
    of examples/sampling.yaml's study (every estimator of both tasks, three variants)."""
    f = _script("sampling_findings")
    if not f.EXTRACT.is_file():
        pytest.fail(f"{f.EXTRACT} missing: run examples/sampling_findings.py on the study directory")
    facts = json.loads(f.EXTRACT.read_text())
    page = f.PAGE.read_text()
    assert f.replace_block(page, f.render(facts)) == page
    assert "samples: 10" in facts["config"]
    measures = {r["measure"] for r in facts["measures"]}
    assert set(f.SAMPLED) <= measures and {r["task"] for r in facts["measures"]} == {"arithmetic_gen", "truthfulqa_gen"}
    assert len({r["variant"] for r in facts["measures"]}) == 3
