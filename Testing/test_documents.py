"""Annotation documents (Appendix B and C, R-6.11) and task definitions (R-6.2, Appendix A)."""

from __future__ import annotations

import copy
import json
import os
import re
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

import numpy as np
import pytest

from MultiModalAnnotationLib.cli import main
from MultiModalAnnotationLib.documents import (
    AnnotationDocument,
    DocumentError,
    document_from_dict,
    document_problems,
    read_document,
    validate_document,
    write_document,
)
from MultiModalAnnotationLib.sample_documents import document_from_sample
from MultiModalAnnotationLib.tasks import TaskError, read_task, task_from_dict, task_problems_against_template
from MultiModalAnnotationLib.templates import builtin_template
from RTSSBridgeLib.geometry import ImageGeometry
from RTSSBridgeLib.nifti import write_nifti

REPO = Path(__file__).resolve().parents[1]
APPENDIX_A = REPO / "Resources" / "tasks" / "thyroid-us-tirads-appendix-a.json"
OBLIQUE = ImageGeometry((40, 30, 12), (0.8, 0.9, 2.5), (-20.0, 15.0, -40.0),
                        ((0.9781476, 0.0, 0.2079117), (0.0, 1.0, 0.0), (-0.2079117, 0.0, 0.9781476)))


@pytest.fixture(scope="module")
def lung_document(tmp_path_factory: pytest.TempPathFactory) -> Tuple[AnnotationDocument, Path]:
    """A small lung document on an oblique, anisotropic, non-origin grid with its mask files."""
    root = tmp_path_factory.mktemp("doc")
    mask = np.zeros(OBLIQUE.array_shape, dtype=np.uint8)
    mask[3:6, 10:20, 5:15] = 1
    write_nifti(root / "masks" / "NODULE_01.nii.gz", mask, OBLIQUE, label_map=True)
    data = {
        "task_id": "TASK_CT_LUNG_000001",
        "template": {"id": "lung-ct", "version": "1.0.0"},
        "image": {"uid": "1.2.3.4", "modality": "CT", "shape": list(OBLIQUE.shape), "spacing": list(OBLIQUE.spacing_mm),
                  "origin": list(OBLIQUE.origin_lps), "direction": [list(r) for r in OBLIQUE.direction]},
        "annotations": [
            {"id": "NODULE_01", "category": "lesion", "label_code": "NODULE", "type": "mask", "instance": 1,
             "mask_file": "masks/NODULE_01.nii.gz", "attributes": {"malignancy": "malignant", "tnm_t": "T1b"},
             "cross_modal_links": ["TXT_SPAN_01"]},
            {"id": "NODULE_01_BOX", "category": "lesion", "label_code": "NODULE", "type": "bbox", "instance": 1,
             "data": {"bbox": [5.0, 10.0, 14.0, 19.0], "slice_index": 4}},
            {"id": "NODULE_01_POINT", "category": "lesion", "label_code": "NODULE", "type": "point", "instance": 1,
             "data": {"point": [9.5, 14.5, 4.0]}},
            {"id": "LUL_OUTLINE", "category": "organ", "label_code": "LUNG_LEFT_UPPER_LOBE", "type": "polygon",
             "data": {"polygon": [[1.0, 1.0], [30.0, 2.0], [20.0, 25.0]], "slice_index": 7}},
        ],
        "metadata": {"annotator": "A01", "reviewer": "R01",
                     "software": {"name": "MultiModalAnnotation", "version": "0.1.0",
                                  "ai_model": {"name": "m", "version": "1"}},
                     "timestamps": {"start": "2026-03-12T10:00:00Z", "end": "2026-03-12T18:25:00+08:00"},
                     "qc": {"status": "pending", "issues": []}, "version": "v1.0",
                     "audit": [{"time": "2026-03-12T10:00:00Z", "actor": "A01", "action": "created"}]},
    }
    (root / "annotation.json").write_text(json.dumps(data), "utf-8")  # C.5 flat style for the first annotation
    return read_document(str(root / "annotation.json")), root


def test_document_json_round_trip_is_exact(lung_document: Tuple[AnnotationDocument, Path], tmp_path: Path) -> None:
    """Must show: document -> JSON -> document (exact, geometry and every field)."""
    document, _root = lung_document
    write_document(str(tmp_path / "a.json"), document)
    back = read_document(str(tmp_path / "a.json"))
    assert back == document
    assert back.to_dict() == document.to_dict()
    assert back.image.geometry.direction == OBLIQUE.direction
    assert document.annotation("NODULE_01").data["mask_file"] == "masks/NODULE_01.nii.gz"  # moved into data


def test_valid_document_passes_template_and_geometry_checks(lung_document: Tuple[AnnotationDocument, Path]) -> None:
    document, root = lung_document
    assert validate_document(document, builtin_template("lung-ct"), root) == []


@pytest.mark.parametrize("kind", ["ct-chest", "mr-brain-mets", "us-thyroid", "xray-ra"])
def test_sample_ground_truth_documents_are_valid(sample_case: Any, kind: str) -> None:
    """Documents built from each sample's ground truth with the matching built-in template are valid."""
    options = {"ct-chest": {"slices": 12}, "mr-brain-mets": {"slices": 16}}.get(kind, {})
    document, masks, template = document_from_sample(Path(sample_case(kind, **options).root))
    assert validate_document(document, template) == []
    assert document_from_dict(document.to_dict()) == document
    assert all(m.shape == document.image.geometry.array_shape and m.any() for m in masks.values())


def _broken(document: AnnotationDocument, change: Callable[[Dict[str, Any]], None]) -> Dict[str, Any]:
    data = copy.deepcopy(document.to_dict())
    change(data)
    return data


def _ann(data: Dict[str, Any], ident: str) -> Dict[str, Any]:
    return next(a for a in data["annotations"] if a["id"] == ident)


BROKEN_DOCUMENTS: List[Tuple[str, Callable[[Dict[str, Any]], None], str]] = [
    ("duplicate id", lambda d: d["annotations"].append(copy.deepcopy(d["annotations"][0])),
     r"annotations\[4\]\.id: duplicate id NODULE_01"),
    ("unknown type", lambda d: _ann(d, "NODULE_01").update(type="mesh"),
     r"annotations\[0\]\.type: 'mesh' is not one of"),
    ("absolute mask path", lambda d: _ann(d, "NODULE_01")["data"].update(mask_file="/etc/masks/x.nii.gz"),
     r"mask_file: '/etc/masks/x.nii.gz' does not match"),
    ("mask path with ..", lambda d: _ann(d, "NODULE_01")["data"].update(mask_file="masks/../../x.nii.gz"),
     r"leaves the package .*no '\.\.'"),
    ("mask without file", lambda d: _ann(d, "NODULE_01")["data"].pop("mask_file"),
     r"data\.mask_file: a mask annotation needs mask_file"),
    ("2-D box without slice", lambda d: _ann(d, "NODULE_01_BOX")["data"].pop("slice_index"),
     r"a 2-D box needs its slice_index"),
    ("inverted box", lambda d: _ann(d, "NODULE_01_BOX")["data"].update(bbox=[14.0, 10.0, 5.0, 19.0]),
     r"has a minimum above its maximum"),
    ("polygon with two points", lambda d: _ann(d, "LUL_OUTLINE")["data"].update(polygon=[[1, 1], [2, 2]]),
     r"polygon: \[\[1, 1\], \[2, 2\]\] is too short"),
    ("two geometries", lambda d: _ann(d, "NODULE_01_POINT")["data"].update(bbox=[1, 1, 2, 2]),
     r"a point annotation has no bbox; rule: one geometry per annotation"),
    ("bad timestamp", lambda d: d["metadata"]["timestamps"].update(start="yesterday"),
     r"metadata\.timestamps\.start: 'yesterday' is not an ISO 8601 date-time"),
    ("end before start", lambda d: d["metadata"]["timestamps"].update(end="2026-03-11T10:00:00Z"),
     r"ends before it starts"),
    ("non-orthonormal direction", lambda d: d["image"].update(direction=[[1, 0, 0], [0, 2, 0], [0, 0, 1]]),
     r"image\.direction: must be orthonormal"),
    ("missing annotator", lambda d: d["metadata"].pop("annotator"), r"metadata: 'annotator' is a required property"),
]


@pytest.mark.parametrize(("case", "change", "match"), BROKEN_DOCUMENTS, ids=[c[0] for c in BROKEN_DOCUMENTS])
def test_broken_documents_are_refused_naming_field_and_rule(lung_document: Tuple[AnnotationDocument, Path],
                                                            case: str, change: Callable[[Dict[str, Any]], None],
                                                            match: str) -> None:
    """Appendix C: schema and structural rules, one line each naming the field."""
    data = _broken(lung_document[0], change)
    problems = document_problems(data)
    assert any(re.search(match, p) for p in problems), problems
    with pytest.raises(DocumentError, match=r"^doc\.json: "):
        document_from_dict(data, file="doc.json")


TEMPLATE_BREAKS: List[Tuple[str, Callable[[Dict[str, Any]], None], str]] = [
    ("unknown code", lambda d: _ann(d, "NODULE_01_POINT").update(label_code="LIVER"),
     r"label_code: LIVER is not a label of template lung-ct"),
    ("wrong category", lambda d: _ann(d, "NODULE_01_POINT").update(category="organ"),
     r"category: organ but NODULE is lesion"),
    ("type not allowed", lambda d: _ann(d, "LUL_OUTLINE").update(type="point", data={"point": [1.0, 1.0, 1.0]}),
     r"LUNG_LEFT_UPPER_LOBE does not allow point"),
    ("bad enum attribute", lambda d: _ann(d, "NODULE_01")["data"]["attributes"].update(malignancy="maybe"),
     r"attributes\.malignancy: 'maybe' is not one of the allowed values of malignancy \(benign, malignant\)"),
    ("out-of-range attribute", lambda d: _ann(d, "NODULE_01")["data"]["attributes"].update(diameter_mm=400),
     r"attributes\.diameter_mm: 400 for diameter_mm is out of range 0\.\.300 mm"),
    ("unknown attribute", lambda d: _ann(d, "NODULE_01")["data"]["attributes"].update(colour="red"),
     r"NODULE has no attribute colour"),
    ("instance out of range", lambda d: _ann(d, "NODULE_01_POINT").update(instance=120),
     r"instance: 120 is above 89"),
    ("instance on a plain label", lambda d: _ann(d, "LUL_OUTLINE").update(instance=2),
     r"LUNG_LEFT_UPPER_LOBE has no numbered instances"),
]


@pytest.mark.parametrize(("case", "change", "match"), TEMPLATE_BREAKS, ids=[c[0] for c in TEMPLATE_BREAKS])
def test_documents_are_checked_against_the_template(lung_document: Tuple[AnnotationDocument, Path], case: str,
                                                    change: Callable[[Dict[str, Any]], None], match: str) -> None:
    document = document_from_dict(_broken(lung_document[0], change))
    problems = validate_document(document, builtin_template("lung-ct"))
    assert any(re.search(match, p) for p in problems), problems


def test_required_attributes_are_enforced() -> None:
    thyroid = builtin_template("thyroid-us-tirads")
    from MultiModalAnnotationLib.documents import Annotation, ImageRef

    image = ImageRef("u", "US", ImageGeometry((10, 10, 1), (0.1, 0.1, 1.0)))
    document = AnnotationDocument("T", thyroid.id, thyroid.version, image, (
        Annotation("N1", "lesion", "THYROID_NODULE", "point", {"point": [1.0, 1.0, 0.0],
                                                                "attributes": {"composition": "spongiform"}}),),
        {"annotator": "A", "software": {"name": "x", "version": "1"},
         "timestamps": {"start": "2026-01-01T00:00:00Z", "end": "2026-01-01T00:00:00Z"}, "version": "1"})
    problems = validate_document(document, thyroid)
    assert "annotations (THYROID_NODULE): required attribute tirads_level is missing" in problems


GEOMETRY_BREAKS: List[Tuple[str, Callable[[Dict[str, Any]], None], str]] = [
    ("point outside", lambda d: _ann(d, "NODULE_01_POINT")["data"].update(point=[40.0, 1.0, 1.0]),
     r"data\.point: 1 position\(s\) outside the image \(first \[40\.0, 1\.0, 1\.0\], image \[40, 30, 12\]"),
    ("box outside", lambda d: _ann(d, "NODULE_01_BOX")["data"].update(bbox=[-1.0, 0.0, 5.0, 5.0]),
     r"data\.bbox: 1 position\(s\) outside"),
    ("slice outside", lambda d: _ann(d, "LUL_OUTLINE")["data"].update(slice_index=12),
     r"slice_index: 12 is outside 0\.\.11"),
    ("missing mask file", lambda d: _ann(d, "NODULE_01")["data"].update(mask_file="masks/none.nii.gz"),
     r"masks/none\.nii\.gz does not exist"),
    ("empty mask value", lambda d: _ann(d, "NODULE_01")["data"].update(mask_value=11),
     r"has no voxel of value 11"),
]


@pytest.mark.parametrize(("case", "change", "match"), GEOMETRY_BREAKS, ids=[c[0] for c in GEOMETRY_BREAKS])
def test_documents_are_checked_against_the_image_geometry(lung_document: Tuple[AnnotationDocument, Path], case: str,
                                                          change: Callable[[Dict[str, Any]], None], match: str) -> None:
    document, root = lung_document
    problems = validate_document(document_from_dict(_broken(document, change)), None, root)
    assert any(re.search(match, p) for p in problems), problems


def test_mask_on_another_grid_and_links_out_are_refused(lung_document: Tuple[AnnotationDocument, Path],
                                                        tmp_path: Path) -> None:
    document, _root = lung_document
    shifted = ImageGeometry(OBLIQUE.shape, OBLIQUE.spacing_mm, (-19.0, 15.0, -40.0), OBLIQUE.direction)
    mask = np.zeros(OBLIQUE.array_shape, dtype=np.uint8)
    mask[0, 0, 0] = 1
    write_nifti(tmp_path / "masks" / "m.nii.gz", mask, shifted)
    outside = tmp_path.parent / f"{tmp_path.name}-outside.nii.gz"
    write_nifti(outside, mask, OBLIQUE)
    os.symlink(outside, tmp_path / "masks" / "link.nii.gz")
    moved = document_from_dict(_broken(document, lambda d: _ann(d, "NODULE_01")["data"].update(
        mask_file="masks/m.nii.gz")))
    problems = validate_document(moved, None, tmp_path)
    assert any(re.search(r"is 1 mm away from the image grid", p) for p in problems), problems
    linked = document_from_dict(_broken(document, lambda d: _ann(d, "NODULE_01")["data"].update(
        mask_file="masks/link.nii.gz")))
    problems = validate_document(linked, None, tmp_path)
    assert any("outside the package (a link points out)" in p for p in problems), problems


def test_appendix_b_form_is_read(tmp_path: Path) -> None:
    """Appendix B.3's example document (with its mask files) reads as an annotation document."""
    grid = ImageGeometry((16, 16, 8), (0.742, 0.742, 1.0), (-158.0, -158.0, -240.0))
    liver = np.zeros(grid.array_shape, dtype=np.uint8)
    liver[2:6, 3:12, 3:12] = 1
    write_nifti(tmp_path / "CT_00123_liver.nii.gz", liver, grid)
    tumour = np.zeros(grid.array_shape, dtype=np.uint8)
    tumour[3:5, 5:8, 5:8] = 1
    write_nifti(tmp_path / "CT_00123_tumor_01.nii.gz", tumour, grid)
    appendix_b = {
        "image_id": "CT_00123", "spacing": [0.742, 0.742, 1.0], "origin": [-158.0, -158.0, -240.0],
        "direction": [[1, 0, 0], [0, 1, 0], [0, 0, 1]],
        "annotations": [
            {"label": "liver", "type": "mask", "mask_file": "CT_00123_liver.nii.gz",
             "attributes": {"organ_system": "digestive", "level": "organ"}},
            {"label": "tumor", "type": "mask", "mask_file": "CT_00123_tumor_01.nii.gz",
             "attributes": {"lesion_type": "HCC", "shape": "irregular", "enhancement": "arterial hyperenhancement"}}],
        "annotator": "doctor_A", "version": "1.0", "timestamp": "2025-03-12T10:25:00"}
    path = tmp_path / "b.json"
    path.write_text(json.dumps(appendix_b), "utf-8")
    liver_template = builtin_template("liver-ct-couinaud")
    document = read_document(str(path), liver_template)
    assert [a.label_code for a in document.annotations] == ["LIVER", "HCC"]
    assert document.image.geometry.shape == (16, 16, 8) and document.metadata["annotator"] == "doctor_A"
    assert document.metadata["timestamps"]["start"] == "2025-03-12T10:25:00Z"
    problems = validate_document(document, liver_template, tmp_path)
    # Appendix B's free attributes on the liver are reported against the template, the HCC ones pass
    assert problems == ["annotations[0] (LIVER_01).data.attributes.organ_system: LIVER has no attribute organ_system "
                        "(known: none)",
                        "annotations[0] (LIVER_01).data.attributes.level: LIVER has no attribute level (known: none)"]
    (tmp_path / "nomask.json").write_text(json.dumps({**appendix_b, "annotations": [
        {"label": "liver", "type": "attribute", "attributes": {}}]}), "utf-8")
    with pytest.raises(DocumentError, match="no image shape"):
        read_document(str(tmp_path / "nomask.json"))


def test_annotation_validate_command(lung_document: Tuple[AnnotationDocument, Path], tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    document, root = lung_document
    assert main(["annotation", "validate", str(root / "annotation.json")]) == 0
    assert "valid" in capsys.readouterr().out
    broken = root / "broken.json"
    broken.write_text(json.dumps(_broken(document, lambda d: _ann(d, "NODULE_01_POINT")["data"].update(
        point=[99.0, 0.0, 0.0]))), "utf-8")
    assert main(["annotation", "validate", str(broken), "--json"]) == 1
    result = json.loads(capsys.readouterr().out)
    assert result["template_checked"] == "lung-ct 1.0.0" and len(result["problems"]) == 1
    (tmp_path / "x.json").write_text("[1]", "utf-8")
    assert main(["annotation", "validate", str(tmp_path / "x.json")]) == 1


# --------------------------------------------------------------------------- tasks
def test_appendix_a_task_is_valid_and_matches_its_template(capsys: pytest.CaptureFixture[str]) -> None:
    """R-6.2 / Appendix A: the worked example task, with the default QC thresholds."""
    task = read_task(str(APPENDIX_A))
    assert task.qc.dice_threshold == 0.75 and task.qc.fusion_deviation_mm == 3.0
    assert task.qc.time_deviation_days == 90 and task.reference_image == "US"
    assert task_problems_against_template(task, builtin_template("thyroid-us-tirads")) == []
    assert main(["task", "validate", str(APPENDIX_A)]) == 0


TASK_BREAKS: List[Tuple[str, Callable[[Dict[str, Any]], None], str]] = [
    ("fusion deviation outside 3-5 mm", lambda d: d["qc"].update(fusion_deviation_mm=6),
     r"qc\.fusion_deviation_mm: 6 is greater than the maximum of 5"),
    ("dice above 1", lambda d: d["qc"].update(dice_threshold=1.5), r"qc\.dice_threshold: 1\.5 is greater than"),
    ("sampling ratio 0", lambda d: d["qc"].update(sampling_ratio=0), r"qc\.sampling_ratio: 0 is less than or equal"),
    ("no annotator", lambda d: d.update(roles=[{"role": "reviewer", "scope": "all"}]), r"roles: no annotator role"),
    ("two reference images", lambda d: d["data"].append({"name": "US2", "kind": "image", "modality": "US",
                                                         "role": "reference"}), r"2 reference image\(s\)"),
    ("moving without registration", lambda d: d["data"].append({"name": "CT", "kind": "image", "modality": "CT",
                                                                "role": "moving"}),
     r"moving image\(s\) \['CT'\] but no registration method"),
    ("model without name", lambda d: d["model_assisted"].pop("model"),
     r"model-assisted annotation without model name and version"),
    ("unknown role", lambda d: d["roles"].append({"role": "boss", "scope": "all"}), r"'boss' is not one of"),
]


@pytest.mark.parametrize(("case", "change", "match"), TASK_BREAKS, ids=[c[0] for c in TASK_BREAKS])
def test_broken_tasks_are_refused(case: str, change: Callable[[Dict[str, Any]], None], match: str) -> None:
    data = json.loads(APPENDIX_A.read_text("utf-8"))
    change(data)
    with pytest.raises(TaskError) as info:
        task_from_dict(data, file="task.json")
    assert any(re.search(match, p) for p in info.value.problems), info.value.problems


def test_task_objects_are_checked_against_the_template(tmp_path: Path) -> None:
    data = json.loads(APPENDIX_A.read_text("utf-8"))
    data["objects"][0]["annotation_types"] = ["mask", "polygon", "point"]
    data["objects"][0]["required_attributes"].append("lobe_volume")
    data["objects"].append({"label_code": "LIVER", "annotation_types": ["mask"]})
    problems = task_problems_against_template(task_from_dict(data), builtin_template("thyroid-us-tirads"))
    assert "objects[0].required_attributes: THYROID_NODULE has no attribute lobe_volume" in problems
    assert "objects[2].label_code: LIVER is not a label of thyroid-us-tirads" in problems
    path = tmp_path / "task.json"
    path.write_text(json.dumps(data), "utf-8")
    assert main(["task", "validate", str(path)]) == 1
