"""Run every scene scenario (``<Module>Lib/mrml/scenarios.py``) against a real MRML scene.

The same functions run inside Slicer from each module's Test class (``runTest``), so this file
only discovers and runs them; what they check is documented in the scenario functions.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path
from typing import List, Tuple

import pytest

REPO = Path(__file__).resolve().parents[1]
SCENARIO_MODULES = {
    "RTSSBridge": "RTSSBridgeLib.mrml.scenarios",
    "QCMetrics": "QCMetricsLib.mrml.scenarios",
    "MultiModalAnnotation": "MultiModalAnnotationLib.mrml.scenarios",
}


def _scenario_ids() -> List[Tuple[str, str]]:
    """(module import name, scenario name) read from the source, so that collection does not
    import slicer (it is absent on the Python 3.9 leg)."""
    found = []
    for module_name, import_name in SCENARIO_MODULES.items():
        path = REPO / module_name / Path(*import_name.split(".")).with_suffix(".py")
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and node.name.startswith("scenario_"):
                found.append((import_name, node.name[len("scenario_"):]))
    return found


SCENARIOS = _scenario_ids()


def test_every_module_has_scenarios() -> None:
    modules_with_scenarios = {import_name for import_name, _ in SCENARIOS}
    assert modules_with_scenarios == set(SCENARIO_MODULES.values())


@pytest.mark.slicer
@pytest.mark.parametrize(("import_name", "name"), SCENARIOS, ids=[f"{m.split('.')[0]}-{n}" for m, n in SCENARIOS])
def test_scenario(import_name: str, name: str, mrml_scene: object, tmp_path: Path) -> None:
    module = importlib.import_module(import_name)
    registry = module.scenarios()
    assert name in registry, f"{import_name}.scenarios() does not list scenario_{name}"
    registry[name](mrml_scene, str(tmp_path))


@pytest.mark.slicer
def test_scenario_registry_matches_the_source() -> None:
    """``scenarios()`` (what the Slicer Test classes run) lists exactly the functions found here."""
    for import_name in SCENARIO_MODULES.values():
        listed = set(importlib.import_module(import_name).scenarios())
        assert listed == {name for module, name in SCENARIOS if module == import_name}


@pytest.mark.slicer
def test_a_failing_scenario_check_raises(mrml_scene: object, tmp_path: Path) -> None:
    """The scenarios' checks can fail: a geometry that disagrees with the node is reported."""
    import numpy as np

    from RTSSBridgeLib.mrml import scenarios

    written = scenarios.write_oblique_ct_series(tmp_path / "ct")
    wrong = written["ijk_to_ras"].copy()
    wrong[0, 3] += 1e-3
    with pytest.raises(AssertionError, match="largest element differs"):
        scenarios._assert_matrix(written["ijk_to_ras"], wrong, "shifted origin")
    with pytest.raises(AssertionError, match="voxel"):
        scenarios._assert_voxels(written["hu"], np.flip(written["hu"], axis=2), "flipped i")
