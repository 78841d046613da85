"""`aihub validate FILE` run as a real process: the shipped examples pass, broken files fail with exact messages."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def validate(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aihub.cli", "validate", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("name", ["pass-params-demo.yaml", "ml-pipeline.yaml"])
def test_examples_are_valid(name: str) -> None:
    result = validate(EXAMPLES / name)

    assert (result.returncode, result.stdout, result.stderr) == (0, "ok\n", "")


def test_json_spec_is_valid(tmp_path: Path) -> None:
    path = tmp_path / "spec.json"
    path.write_text(json.dumps({"name": "json-demo", "nodes": [{"name": "a", "command": "echo hi"}]}))

    result = validate(path)

    assert (result.returncode, result.stdout, result.stderr) == (0, "ok\n", "")


def test_every_issue_is_printed_one_per_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(
        """\
name: broken
params:
  - name: greeting
nodes:
  - name: step1
    command: echo hi
    depends_on: [step2]
    retries: 101
    outputs:
      - {name: out, path: relative/out.txt, type: text}
  - name: step2
    command: echo $x
    inputs:
      - {name: x, from: step9.out}
      - {name: msg, from: params.greeting}
      - {name: msg, value: again}
    depends_on: [step1]
"""
    )

    result = validate(path)

    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "nodes[0] 'step1': outputs[0].path: 'relative/out.txt' must be an absolute path",
        "nodes[0] 'step1': retries: must be at most 100 (got 101)",
        "nodes[0] 'step1': cycle: step1 -> step2 -> step1",
        "nodes[1] 'step2': input name 'msg' is used twice: inputs[1] and inputs[2]",
        "nodes[1] 'step2': input 'x' refers to 'step9.out', but there is no node 'step9' (did you mean 'step1'?)",
    ]


def test_yaml_syntax_error_names_file_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "syntax.yaml"
    path.write_text("name: syntax\nnodes:\n  - name: a\n   command: b\n")

    result = validate(path)

    assert result.returncode == 1
    assert result.stderr == f"{path}: invalid YAML at line 4, column 4: did not find expected '-' indicator\n"


def test_empty_file_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("")

    result = validate(path)

    assert (result.returncode, result.stderr) == (1, f"{path}: the spec is empty\n")


def test_missing_file_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"

    result = validate(path)

    assert (result.returncode, result.stderr) == (1, f"{path}: No such file or directory\n")
