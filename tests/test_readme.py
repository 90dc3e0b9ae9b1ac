"""The README's Python examples run as written, and its service example is answered as shown: a
renamed function, a moved import or a changed request schema fails here, not in a new user's
first five minutes."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_the_readme_has_python_examples():
    assert len(BLOCKS) >= 3


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_runs(index, tmp_path):
    """Each block in a fresh interpreter, in a scratch directory (examples write under runs/)."""
    result = subprocess.run(
        [sys.executable, "-c", BLOCKS[index]], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, f"README example {index + 1} failed:\n{BLOCKS[index]}\n{result.stderr[-3000:]}"


JSON_BLOCKS = [json.loads(b) for b in re.findall(r"```json\n(.*?)```", README.read_text(), flags=re.S)]


def test_the_readme_decide_example_is_accepted_and_answered_as_shown():
    """The README's POST /v1/decide body, sent to the service its command line starts, gets the
    README's answer (all but the latency, which is the machine's)."""
    from fastapi.testclient import TestClient

    from adaptflow.runtime.service import app_for

    assert "adaptflow serve --planner threshold --scenario etl_diurnal" in README.read_text()
    (request,) = [b for b in JSON_BLOCKS if "metrics" in b]
    (answer,) = [b for b in JSON_BLOCKS if "workers" in b]
    response = TestClient(app_for("threshold", "etl_diurnal")).post("/v1/decide", json=request)
    assert response.status_code == 200, response.text
    got = response.json()
    assert set(got) == set(answer)
    assert {k: v for k, v in got.items() if k != "latency_ms"} == {k: v for k, v in answer.items() if k != "latency_ms"}


def test_the_readme_shows_every_planner_spec_form():
    text = " ".join(README.read_text().split())
    for form in ("sb3:PATH", "onnx:PATH", "LABEL@SPEC", "ppo@sb3:", "threshold:target=0.6"):
        assert form in text, form
