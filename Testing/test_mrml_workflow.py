"""Scene adapter of the case workflow on the real MRML scene (R-6.7.3, R-6.8, R-6.12)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from MultiModalAnnotationLib.provenance.case import Case
from Testing.test_workflow import admitted, brain_sample


@pytest.fixture(scope="module")
def brain(sample_case: Any) -> Any:
    return brain_sample(sample_case)


def test_segment_status_follows_the_workflow(brain: Any, tmp_path: Path, mrml_scene: Any) -> None:
    """R-6.7.3/R-6.8: Slicer's segment status follows the case: in progress while annotating,
    flagged for an uncertain annotation or an exception, completed in review; the case node
    keeps the state and history for the panel."""
    from MultiModalAnnotationLib.mrml.documents import scene_from_document
    from MultiModalAnnotationLib.mrml.workflow import (
        apply_case_state,
        find_case_node,
        history_lines,
        read_case_node,
        segment_statuses,
        write_case_node,
    )

    document, masks, template = brain
    nodes = scene_from_document(mrml_scene, document, template, masks)
    segmentation = nodes.segmentation
    case: Case = admitted(tmp_path, brain)
    apply_case_state(segmentation, case.state())
    assert set(segment_statuses(segmentation).values()) == {"inprogress"}
    case.save_version("A01", "annotator", document, masks)
    case.save_version("A02", "annotator", document, masks)
    case.flag("A01", "annotator", "METASTASIS_03", "artefact", "motion")
    case.advance("A01", "annotator", "in_review")
    statuses = apply_case_state(segmentation, case.state())
    assert statuses["METASTASIS_03"] == "flagged" and statuses["METASTASIS_01"] == "completed"
    assert segment_statuses(segmentation) == statuses
    segment = segmentation.GetSegmentation().GetSegment("METASTASIS_03")
    value = __import__("vtk").reference("")
    assert segment.GetTag("MultiModalAnnotation.Uncertainty", value) and str(value) == "artefact"
    case.advance("R01", "reviewer", "exception", reason="reference series incomplete")
    assert set(apply_case_state(segmentation, case.state()).values()) == {"flagged"}

    node = write_case_node(mrml_scene, case.state(), str(case.folder), case.history())
    again = write_case_node(mrml_scene, case.state(), str(case.folder), case.history())
    assert again is node and find_case_node(mrml_scene, "CASE_0001") is node
    read = read_case_node(node)
    assert read["state"] == "exception" and read["summary"]["case"] == "CASE_0001"
    lines = history_lines(read["history"])
    assert lines[0].startswith("#1 ") and "created" in lines[0]
    assert "exception" in lines[-1] and "reference series incomplete" in lines[-1]
    with pytest.raises(ValueError, match="not a MultiModalAnnotation case node"):
        read_case_node(nodes.document_node)


def test_panel_logic_shows_the_case_and_records_a_review(brain: Any, tmp_path: Path, mrml_scene: Any,
                                                         slicer_modules: Any) -> None:
    """R-6.8: the panel's logic reads the case into the scene, sets segment status, and records a
    review opinion in the trail; a refused review leaves the trail unchanged."""
    from MultiModalAnnotationLib.mrml.documents import scene_from_document
    from MultiModalAnnotationLib.mrml.workflow import segment_statuses
    from MultiModalAnnotationLib.provenance.review import OPINIONS
    from MultiModalAnnotationLib.provenance.workflow import WorkflowError

    module = slicer_modules["MultiModalAnnotation"]
    assert tuple(module.REVIEW_OPINIONS) == OPINIONS
    logic = module.MultiModalAnnotationLogic()
    document, masks, template = brain
    nodes = scene_from_document(mrml_scene, document, template, masks)
    case: Case = admitted(tmp_path, brain, high_risk=False)
    for reader in ("A01", "A02"):
        case.save_version(reader, "annotator", document, masks)
    info = logic.showCase(str(case.folder), nodes.document_node, scene=mrml_scene)
    assert info["state"] == "annotating" and info["lines"][0].startswith("#1 ")
    assert set(segment_statuses(nodes.segmentation).values()) == {"inprogress"}
    before = case.trail.path.read_bytes()
    with pytest.raises(WorkflowError, match="state 'annotating'; role 'reviewer'"):
        logic.submitReview(str(case.folder), "R01", "case", "accept", "", nodes.document_node, scene=mrml_scene)
    assert case.trail.path.read_bytes() == before
    case.advance("A01", "annotator", "in_review")
    info = logic.submitReview(str(case.folder), "R01", "METASTASIS_02", "request_change", "rim missed",
                              nodes.document_node, scene=mrml_scene)
    assert "reviewed" in info["lines"][-1] and "rim missed" in info["lines"][-1]
    assert set(segment_statuses(nodes.segmentation).values()) == {"completed"}
    with pytest.raises(ValueError, match="case folder"):
        logic.showCase("", None, scene=mrml_scene)
