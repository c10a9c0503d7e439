"""The noise-floor findings in docs/noise_floor.md are what examples/noise_floor_findings.py renders from the committed
extract of the study's summary.json: editing the numbers by hand, or regenerating the extract without
the page, fails here."""

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _findings():
    spec = importlib.util.spec_from_file_location("noise_floor_findings", ROOT / "examples" / "noise_floor_findings.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_findings_block_is_rendered_from_the_extract():
    f = _findings()
    if not f.EXTRACT.is_file():
        pytest.fail(f"{f.EXTRACT} missing: run examples/noise_floor_findings.py on the study directory")
    facts = json.loads(f.EXTRACT.read_text())
    readme = f.PAGE.read_text()
    assert f.replace_block(readme, f.render(facts)) == readme
    assert "limit: 500" in facts["config"] and all(x["n"] >= 500 for x in facts["floors"])
