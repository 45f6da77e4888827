"""Every official parity fixture through `codi.parity`, compared within the json's tolerances."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import PARITY_DIR, parity_dir
from parity_utils import compare_outputs, load_reference

from codi.parity import RUNNERS, read_fixture, run_fixture

FIXTURES = sorted(p.stem for p in PARITY_DIR.glob("*.json") if p.stem != "manifest") or sorted(RUNNERS)


@pytest.mark.parametrize("name", FIXTURES)
def test_fixture_matches_official(name: str) -> None:
    folder = parity_dir()
    spec, tensors = read_fixture(folder / f"{name}.json", folder / f"{name}.safetensors")
    ours = run_fixture(spec, tensors)
    report = compare_outputs(spec, ours, load_reference(folder / f"{name}.safetensors"))
    worst = max(report.items(), key=lambda kv: kv[1][0] / max(kv[1][1], 1e-12))
    print(f"{name}: worst {worst[0]} error {worst[1][0]:.3g} (tolerance {worst[1][1]:.3g})")


def test_cli_writes_every_output(tmp_path: Path) -> None:
    """The command line form on the smallest fixture: every named output, nothing read from output.*."""
    from safetensors.torch import load_file

    from codi.parity import main

    folder = parity_dir()
    out = tmp_path / "out.safetensors"
    assert main([str(folder / "context_mixing.json"), str(folder / "context_mixing.safetensors"), str(out)]) == 0
    spec = json.loads((folder / "context_mixing.json").read_text())
    assert set(load_file(str(out))) == set(spec["outputs"])
