"""Scenarios of MultiModalAnnotation that need a scene.

Annotation starts from a case on screen: its image series and the labels drawn on them must
share one voxel grid (R-5.3 spatial consistency, R-8.4.1 "annotation happens on the registered
images only"). These scenarios generate a sample case with :mod:`RTSSBridgeLib.samples`, load
it through the core readers and RTSSBridge's scene adapters, and check exactly that.

Each ``scenario_<name>(scene, workdir)`` raises ``AssertionError`` on failure; the same functions
run in pytest (``Testing/test_scenarios.py``) and in ``MultiModalAnnotationTest.runTest`` in Slicer.
Only the case folder's documented layout is relied on: ``<root>/dicom`` holds the DICOM files and
``<root>/ground_truth/*.nii.gz`` the label maps.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Dict

import vtk

from RTSSBridgeLib.dicom_series import read_volume, scan_dicom
from RTSSBridgeLib.mrml.volumes import geometry_from_volume_node, volume_node_from_dicom, volume_node_from_nifti
from RTSSBridgeLib.nifti import read_nifti
from RTSSBridgeLib.problems import Severity

#: NIfTI-1 stores the affine as float32: at 300 mm from the origin that is a few 1e-5 mm.
LABEL_GRID_TOLERANCE_MM = 1e-3


def scenario_oblique_sample_ct_and_labels_share_one_grid(scene: Any, workdir: str | os.PathLike[str]) -> None:
    """An oblique chest CT sample: the CT volume node and the ground-truth labelmap node have the
    same voxel grid in the scene, and the labelmap is not empty."""
    from RTSSBridgeLib.samples import write_sample

    case = write_sample("ct-chest", Path(workdir) / "ct-chest", seed=7, slices=6, oblique=True)
    root = Path(case.root)
    scan = scan_dicom(str(root / "dicom"))
    if len(scan.series) != 1:
        raise AssertionError(f"expected the one CT series, found {len(scan.series)}")
    series = scan.series[0]
    errors = [p.message for p in series.problems if p.severity == Severity.ERROR]
    if errors:
        raise AssertionError(f"the sample CT was reported with errors: {errors}")
    ct_node = volume_node_from_dicom(scene, read_volume(series))
    ct_grid = geometry_from_volume_node(ct_node)
    if not ct_grid.is_oblique():
        raise AssertionError(f"the oblique sample loaded on a non-oblique grid ({ct_grid.axis_codes()})")

    label_files = sorted((root / "ground_truth").glob("*.nii.gz"))
    if not label_files:
        raise AssertionError(f"no ground-truth label map in {root / 'ground_truth'}")
    for path in label_files:
        label_node = volume_node_from_nifti(scene, read_nifti(path), label_map=True)
        if not label_node.IsA("vtkMRMLLabelMapVolumeNode"):
            raise AssertionError(f"{path.name}: loaded as {label_node.GetClassName()}, not as a labelmap")
        distance = geometry_from_volume_node(label_node).max_corner_distance_mm(ct_grid)
        if distance > LABEL_GRID_TOLERANCE_MM:
            raise AssertionError(f"{path.name}: label grid is {distance:.3g} mm away from the CT grid "
                                 f"(> {LABEL_GRID_TOLERANCE_MM:g} mm)")
        value_range = label_node.GetImageData().GetScalarRange()
        if value_range[1] <= 0:
            raise AssertionError(f"{path.name}: the label map is empty in the scene (range {value_range})")

    # Both nodes sit in the same place for Slicer's own slice logic too (IJKToRAS, not just our read-out).
    a, b = vtk.vtkMatrix4x4(), vtk.vtkMatrix4x4()
    ct_node.GetIJKToRASMatrix(a)
    label_node.GetIJKToRASMatrix(b)
    deviation = max(abs(a.GetElement(r, c) - b.GetElement(r, c)) for r in range(3) for c in range(4))
    if deviation > LABEL_GRID_TOLERANCE_MM:
        raise AssertionError(f"IJKToRAS of CT and labels differ by {deviation:.3g}")


def scenario_template_becomes_a_coded_segmentation(scene: Any, workdir: str | os.PathLike[str]) -> None:
    """R-6.6: the brain-metastasis template becomes a segmentation whose segments carry the label
    codes, names, colours and Slicer terminology entries that Slicer's terminology logic reads."""
    import slicer

    from ..templates import builtin_template
    from .templates import TAG_TERMINOLOGY, load_terminology, segment_label_code, segmentation_from_template

    template = builtin_template("brain-mets-mr")
    logic = slicer.vtkSlicerTerminologiesModuleLogic()
    context = load_terminology(template, logic, str(workdir))
    node = segmentation_from_template(scene, template)
    segmentation = node.GetSegmentation()
    expected = [label.code for label in template.labelmap_labels()]
    found = [segmentation.GetNthSegmentID(n) for n in range(segmentation.GetNumberOfSegments())]
    if found != expected:
        raise AssertionError(f"segments {found}, expected {expected}")
    for code in expected:
        label = template.label(code)
        segment = segmentation.GetSegment(code)
        if segment_label_code(segment) != code or segment.GetName() != label.name:
            raise AssertionError(f"{code}: segment tagged {segment_label_code(segment)!r} named {segment.GetName()!r}")
        colour = [round(c * 255) for c in segment.GetColor()]
        if colour != list(label.color or ()):
            raise AssertionError(f"{code}: colour {colour}, template {label.color}")
        text = vtk.reference("")
        segment.GetTag(TAG_TERMINOLOGY, text)
        entry = slicer.vtkSlicerTerminologyEntry()
        if not logic.DeserializeTerminologyEntry(str(text), entry) or entry.GetTerminologyContextName() != context:
            raise AssertionError(f"{code}: terminology entry {text} is not one of the loaded context {context}")
        if entry.GetTypeObject().GetCodeValue() != label.codes["type"].value:
            raise AssertionError(f"{code}: terminology type {entry.GetTypeObject().GetCodeValue()}")


def scenario_annotation_document_round_trips_through_the_scene(scene: Any, workdir: str | os.PathLike[str]) -> None:
    """Appendix C <-> scene: the thyroid sample's document (mask, box, attributes, links) becomes
    nodes and comes back identical (masks voxel for voxel, positions to 1e-9 voxel)."""
    import numpy as np

    from RTSSBridgeLib.samples import write_sample

    from ..sample_documents import document_from_sample
    from .documents import document_from_scene, scene_from_document

    case = write_sample("us-thyroid", Path(workdir) / "us-thyroid", seed=3)
    document, masks, template = document_from_sample(Path(case.root))
    scene_from_document(scene, document, template, masks)
    back, back_masks = document_from_scene(scene)
    if [a.id for a in back.annotations] != [a.id for a in document.annotations]:
        raise AssertionError("annotation order or ids changed")
    for a, b in zip(document.annotations, back.annotations):
        geometry = ("bbox", "point", "polygon")
        if {k: v for k, v in a.data.items() if k not in geometry} != {k: v for k, v in b.data.items()
                                                                      if k not in geometry}:
            raise AssertionError(f"{a.id}: data changed: {a.data} -> {b.data}")
        for key in geometry:
            if key in a.data and np.max(np.abs(np.subtract(a.data[key], b.data[key]))) > 1e-9:
                raise AssertionError(f"{a.id}: {key} moved: {a.data[key]} -> {b.data[key]}")
    if back.metadata != document.metadata or back.image != document.image:
        raise AssertionError("metadata or image changed")
    for ident, mask in masks.items():
        if not np.array_equal(back_masks[ident], mask):
            raise AssertionError(f"{ident}: mask voxels changed")


def scenario_sample_report_links_check_and_round_trip_through_the_scene(
        scene: Any, workdir: str | os.PathLike[str]) -> None:
    """R-8.4.2 on the thyroid sample's own reports (Chinese and English): the first sentence of each
    is linked to the nodule mask; the consistency aids find them consistent (size, lobe); a copy
    that names the left lobe is proposed inconsistent; the report text nodes, the links (attributes
    and node references to the segmentation) and their states come back from the scene unchanged."""
    import json as _json

    from RTSSBridgeLib.samples import write_sample

    from ..consistency import check_links
    from ..links import add_link, add_report, report_links_of
    from ..reports_text import Report, split_sentences
    from ..sample_documents import document_from_sample
    from .documents import document_from_scene, scene_from_document
    from .links import LINK_PREFIX

    case = write_sample("us-thyroid", Path(workdir) / "us-thyroid-report", seed=5)
    document, masks, template = document_from_sample(Path(case.root))
    report = _json.loads((Path(case.root) / "ground_truth" / "nodule.json").read_text("utf-8"))["report"]
    target = next(a.id for a in document.annotations if a.type == "mask" and a.label_code == "THYROID_NODULE")
    wrong = report["text_zh"].replace("甲状腺右叶", "甲状腺左叶", 1)
    for ident, text in (("RPT_ZH", report["text_zh"]), ("RPT_EN", report["text_en"]), ("RPT_WRONG", wrong)):
        document = add_report(document, Report(ident, text))
        first = split_sentences(text)[0]
        document, _ = add_link(document, ident, first.start, first.end, target, "finding", actor="scenario",
                               time="2026-01-01T00:00:00Z")
    document, results = check_links(document, template, masks)
    states = [r.state for r in results]
    if states != ["consistent", "consistent", "inconsistent"]:
        raise AssertionError(f"consistency of the sample's reports: {[(r.state, r.note) for r in results]}")
    nodes = scene_from_document(scene, document, template, masks)
    if [n.GetAttribute("MultiModalAnnotation.ReportId") for n in nodes.reports] != ["RPT_ZH", "RPT_EN", "RPT_WRONG"]:
        raise AssertionError("the reports did not become text nodes")
    if nodes.reports[0].GetNodeReference(LINK_PREFIX + "TXT_SPAN_01") is not nodes.segmentation:
        raise AssertionError("the link does not reference the segmentation that shows its target")
    back, _ = document_from_scene(scene, nodes.document_node, template)
    if back.report_links != document.report_links:
        raise AssertionError("the links changed through the scene")
    if [i.consistency.state for i in report_links_of(back).links] != states:
        raise AssertionError("the consistency states changed through the scene")


def scenarios() -> Dict[str, Callable[[Any, Any], None]]:
    """Every ``scenario_*`` function of this module by name, in definition order."""
    return {name[len("scenario_"):]: func for name, func in globals().items()
            if name.startswith("scenario_") and callable(func)}
