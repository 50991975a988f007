"""The RTSSBridge panel's intake (R-6.3, R-6.4, R-7.3): check -> de-identify -> verify -> load into
a real MRML scene, with progress, and nothing identifying reaching the scene."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import pytest

from RTSSBridgeLib.deid.keys import generate_key_file, read_key_file
from RTSSBridgeLib.deid.verify import collect_identifying_values, normalise
from RTSSBridgeLib.dicom_series import read_volume, scan_dicom
from RTSSBridgeLib.uids import keyed_uid

pytestmark = pytest.mark.slicer


@pytest.fixture
def key_file(tmp_path: Path) -> str:
    path = tmp_path / "keys" / "intake.key"
    generate_key_file(str(path))
    return str(path)


def test_intake_loads_only_deidentified_series_with_the_original_geometry(
        slicer_modules: Dict[str, Any], mrml_scene: Any, sample_case: Any, key_file: str, tmp_path: Path) -> None:
    """R-6.3 -> R-7.3: an admitted MR case is de-identified (brain-mets-mr), passes the leak check
    and its three series are loaded with the original geometry and voxels; node names, attributes
    and subject hierarchy carry pseudonymous UIDs only; the progress bar runs to the end."""
    from RTSSBridgeLib.mrml.volumes import ATTR_SERIES_UID, array_from_volume_node, geometry_from_volume_node

    case = sample_case("mr-brain-mets", slices=24)
    logic = slicer_modules["RTSSBridge"].RTSSBridgeLogic()
    progress: List[int] = []
    result = logic.intake(str(case.root), str(tmp_path / "out"), "generic", "brain-mets-mr", key_file,
                          progress=lambda done, total: progress.append(done * 1000 // total))
    assert result["stopped_at"] is None
    assert result["admission"]["verdict"] == "admitted" and result["leaks"]["n_leaks"] == 0
    assert progress == sorted(progress) and progress[-1] == 1000 and len(set(progress)) > 10
    nodes = result["nodes"]
    assert len(nodes) == 3 and all(n.GetScene() is mrml_scene for n in nodes)
    key = read_key_file(key_file)
    originals = {keyed_uid(key, s.series_uid): s for s in scan_dicom(str(case.root)).series}
    found = collect_identifying_values(str(case.root))
    for node in nodes:
        series = originals[node.GetAttribute(ATTR_SERIES_UID)]
        assert geometry_from_volume_node(node).max_corner_distance_mm(series.geometry) < 1e-9
        assert np.array_equal(array_from_volume_node(node), read_volume(series).voxels)
        text = " ".join([node.GetName()] + [node.GetAttribute(a) or "" for a in node.GetAttributeNames()])
        assert not any(uid in text for uid in found.uids)
        pattern = found.pattern()
        assert pattern is not None and pattern.search(normalise(text).replace(" ", "")) is None
    # brain-mets-mr keeps the series descriptions (seed 002 section 2): the nodes are named by them
    assert {n.GetName().split(" ", 2)[2] for n in nodes} == {s.series_description for s in originals.values()}
    lines = logic.intakeLines(result)
    assert not any("LEAK" in line for line in lines)


def test_intake_stops_before_deidentification_when_admission_fails(
        slicer_modules: Dict[str, Any], mrml_scene: Any, sample_case: Any, key_file: str, tmp_path: Path) -> None:
    """R-6.3.3: a polyglot file in the delivery rejects it: nothing is de-identified or loaded,
    the file is quarantined beside the chosen output, and the panel lists why."""
    source = tmp_path / "delivery"
    shutil.copytree(sample_case("xray-ra").root, source)
    first = sorted(source.rglob("*.dcm"))[0]
    (first.parent / "evil.dcm").write_bytes(b"MZ" + first.read_bytes()[2:])
    logic = slicer_modules["RTSSBridge"].RTSSBridgeLogic()
    result = logic.intake(str(source), str(tmp_path / "out"), "generic", "ra-xray", key_file)
    assert result["stopped_at"] == "admission" and result["nodes"] == [] and result["deid"] is None
    assert not (tmp_path / "out").exists()
    assert mrml_scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode") == 0
    manifest = json.loads((tmp_path / "out.quarantine" / "quarantine.json").read_text(encoding="utf-8"))
    assert [f["code"] for f in manifest["files"]] == ["POLYGLOT_PREAMBLE"]
    assert any("POLYGLOT_PREAMBLE" in line and "BLOCKING" in line for line in logic.intakeLines(result))
    assert logic.admissionProfiles() == ["generic", "lung-radiomics-ct"]
    assert logic.deidProfiles() == ["basic", "brain-mets-mr", "ra-xray"]
    assert os.path.isfile(key_file)
