"""Scene adapters of MultiModalAnnotation on the real MRML scene of slicer-core (R-6.6, R-6.7,
Appendix C): template -> segmentation, document <-> scene both ways."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict

import numpy as np
import pytest

from MultiModalAnnotationLib.documents import AnnotationDocument, validate_document
from MultiModalAnnotationLib.sample_documents import document_from_sample

pytestmark = pytest.mark.slicer
SAMPLES = {"ct-chest": {"slices": 12, "oblique": True}, "mr-brain-mets": {"slices": 16}, "us-thyroid": {},
           "xray-ra": {}}


def assert_documents_match(a: AnnotationDocument, b: AnnotationDocument, tolerance: float = 1e-9) -> float:
    """Equal in everything; positions within ``tolerance`` voxel. Returns the largest deviation."""
    assert (a.task_id, a.template_id, a.template_version, a.image) == (b.task_id, b.template_id, b.template_version,
                                                                       b.image)
    assert a.metadata == b.metadata
    assert [x.id for x in a.annotations] == [y.id for y in b.annotations]
    worst = 0.0
    for x, y in zip(a.annotations, b.annotations):
        assert (x.category, x.label_code, x.type, x.instance, x.uncertain) == \
            (y.category, y.label_code, y.type, y.instance, y.uncertain), x.id
        geometry = ("bbox", "point", "polygon")
        assert {k: v for k, v in x.data.items() if k not in geometry} == \
            {k: v for k, v in y.data.items() if k not in geometry}, x.id
        for key in geometry:
            if key in x.data:
                worst = max(worst, float(np.max(np.abs(np.subtract(x.data[key], y.data[key])))))
    assert worst <= tolerance, worst
    return worst


def node_state(scene: Any, nodes: Any) -> Dict[str, Any]:
    """What a person sees of a document's nodes: segment voxels per id, RAS positions, tags."""
    from MultiModalAnnotationLib.documents import ImageRef
    from MultiModalAnnotationLib.mrml.documents import HEADER_PARAMETER, _segment_mask

    header = json.loads(nodes.document_node.GetParameter(HEADER_PARAMETER))
    grid = ImageRef.from_dict(header["image"]).geometry
    state: Dict[str, Any] = {"header": header}
    if nodes.segmentation is not None:
        segmentation = nodes.segmentation.GetSegmentation()
        for n in range(segmentation.GetNumberOfSegments()):
            ident = segmentation.GetNthSegmentID(n)
            segment = segmentation.GetSegment(ident)
            state[f"segment {ident}"] = (segment.GetName(), tuple(round(c, 6) for c in segment.GetColor()),
                                         _segment_mask(nodes.segmentation, ident, grid))
    if nodes.points is not None:
        for n in range(nodes.points.GetNumberOfControlPoints()):
            ras = [0.0, 0.0, 0.0]
            nodes.points.GetNthControlPointPosition(n, ras)
            state[f"point {nodes.points.GetNthControlPointLabel(n)}"] = np.array(ras)
    for shape in nodes.shapes:
        if shape.IsA("vtkMRMLMarkupsROINode"):
            state[f"roi {shape.GetName()}"] = (np.array(shape.GetCenter()), np.array(shape.GetSize()))
        else:
            state[f"curve {shape.GetName()}"] = np.array([shape.GetNthControlPointPosition(c)
                                                          for c in range(shape.GetNumberOfControlPoints())])
    return state


def assert_states_match(a: Dict[str, Any], b: Dict[str, Any], tolerance_mm: float = 1e-9) -> None:
    assert sorted(a) == sorted(b)
    for key, value in a.items():
        if key.startswith("segment"):
            assert value[:2] == b[key][:2] and np.array_equal(value[2], b[key][2]), key
        elif key.startswith("roi"):
            # Slicer keeps an ROI centre in float32; sizes are doubles
            assert np.allclose(value[0], b[key][0], atol=1e-4) and np.allclose(value[1], b[key][1], atol=tolerance_mm)
        elif key == "header":
            assert value == b[key]
        else:
            assert np.max(np.abs(value - b[key])) <= tolerance_mm, key


@pytest.mark.parametrize("kind", list(SAMPLES))
def test_document_to_scene_to_document_is_exact(sample_case: Any, kind: str, mrml_scene: Any) -> None:
    """Document -> scene -> document: identical (masks voxel for voxel, positions to float round-off)."""
    from MultiModalAnnotationLib.mrml.documents import document_from_scene, scene_from_document

    document, masks, template = document_from_sample(Path(sample_case(kind, **SAMPLES[kind]).root))
    scene_from_document(mrml_scene, document, template, masks)
    back, back_masks = document_from_scene(mrml_scene, template=template)
    assert_documents_match(document, back)
    assert sorted(back_masks) == sorted(masks)
    for ident, mask in masks.items():
        assert np.array_equal(back_masks[ident], mask), ident
    assert validate_document(back, template) == []


def test_scene_to_document_to_scene_is_exact_after_a_person_edits(sample_case: Any, mrml_scene: Any) -> None:
    """Must show: scene -> document -> scene on real MRML. The scene is edited as a person would
    (a point moved, a box moved and resized, a mask painted, a lesion curve drawn) before it is read;
    the scene rebuilt from the document shows the same segments, points, boxes and curves."""
    import slicer
    import vtk

    from MultiModalAnnotationLib.mrml.documents import (
        REF_SHAPES,
        document_from_scene,
        scene_from_document,
    )
    from MultiModalAnnotationLib.mrml.templates import TAG_LABEL_CODE

    document, masks, template = document_from_sample(Path(sample_case("ct-chest", **SAMPLES["ct-chest"]).root))
    grid = document.image.geometry
    first = scene_from_document(mrml_scene, document, template, masks)
    first.points.SetNthControlPointPosition(0, *(np.array(first.points.GetNthControlPointPosition(0)) + 1.25))
    roi_item = document.annotations[0]
    box = mrml_scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "drawn box")
    box.SetAttribute(TAG_LABEL_CODE, "NODULE")
    axes = np.diag([-1.0, -1.0, 1.0]) @ grid.direction_matrix
    matrix = vtk.vtkMatrix4x4()
    for r in range(3):
        for c in range(3):
            matrix.SetElement(r, c, axes[r, c])
    centre = grid.ijk_to_ras([100.0, 200.0, 5.0])
    for r in range(3):
        matrix.SetElement(r, 3, float(centre[r]))
    box.SetAndObserveObjectToNodeMatrix(matrix)
    box.SetSize(12.0, 8.0, 5.0)
    first.document_node.AddNodeReferenceID(REF_SHAPES, box.GetID())
    curve = mrml_scene.AddNewNodeByClass("vtkMRMLMarkupsClosedCurveNode", "drawn outline")
    curve.SetAttribute(TAG_LABEL_CODE, "LUNG_LEFT_UPPER_LOBE")
    for ijk in ([300.0, 200.0, 6.0], [340.0, 210.0, 6.0], [320.0, 260.0, 6.0]):
        curve.AddControlPoint(vtk.vtkVector3d(*grid.ijk_to_ras(ijk).tolist()))
    first.document_node.AddNodeReferenceID(REF_SHAPES, curve.GetID())
    first.shapes += [box, curve]
    # a person paints one more voxel into a nodule
    painted = masks[roi_item.id].copy() if roi_item.type == "mask" else None
    assert painted is not None
    painted[tuple(np.argwhere(masks[roi_item.id])[0] + [0, 0, 1])] = True
    from MultiModalAnnotationLib.mrml.documents import _oriented_mask

    first.segmentation.GetSegmentation().GetSegment(roi_item.id).AddRepresentation(
        "Binary labelmap", _oriented_mask(painted, grid))

    before = node_state(mrml_scene, first)
    read, read_masks = document_from_scene(mrml_scene, first.document_node, template)
    assert np.array_equal(read_masks[roi_item.id], painted)
    assert read.annotation("drawn box").label_code == "NODULE" and read.annotation("drawn box").category == "lesion"
    assert read.annotation("drawn outline").data["slice_index"] == 6
    other = slicer.vtkMRMLScene()
    try:
        second = scene_from_document(other, read, template, read_masks)
        after = node_state(other, second)
        before_header = dict(before["header"])
        after_header = dict(after["header"])
        assert after_header.pop("order")[-2:] == ["drawn box", "drawn outline"]
        before_header.pop("order")
        assert before_header == after_header
        before.pop("header")
        after.pop("header")
        assert_states_match(before, after)
    finally:
        other.Clear(1)


def test_template_segmentation_is_on_the_reference_grid(mrml_scene: Any, sample_case: Any) -> None:
    """R-6.6: the template's segmentation takes the reference volume's geometry."""
    from MultiModalAnnotationLib.mrml.templates import segmentation_from_template
    from MultiModalAnnotationLib.templates import builtin_template
    from RTSSBridgeLib.mrml.volumes import volume_node_from_nifti
    from RTSSBridgeLib.nifti import read_nifti

    case = sample_case("mr-brain-mets", **SAMPLES["mr-brain-mets"])
    volume = volume_node_from_nifti(mrml_scene, read_nifti(Path(case.root) / "ground_truth" / "mr_labels.nii.gz"))
    node = segmentation_from_template(mrml_scene, builtin_template("brain-mets-mr"), volume,
                                      codes=["BRAIN", "METASTASIS"], locale="zh")
    names = [node.GetSegmentation().GetNthSegment(n).GetName() for n in range(2)]
    assert names == ["脑", "脑转移瘤"]
    assert node.GetNodeReferenceID("referenceImageGeometryRef") == volume.GetID()
    with pytest.raises(Exception, match="is not a label of template"):
        segmentation_from_template(mrml_scene, builtin_template("brain-mets-mr"), codes=["LIVER"])

