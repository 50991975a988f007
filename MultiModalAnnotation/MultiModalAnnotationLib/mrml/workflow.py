"""Scene adapter: the case workflow in the MRML scene (R-6.7.3, R-6.8, R-6.12).

* :func:`apply_case_state` - Slicer's segment status follows the workflow: every segment of the
  document's segmentation (segment ID = annotation id) gets the status Slicer's Segment Editor
  shows (``vtkSlicerSegmentationsModuleLogic.SetSegmentStatus``, tag ``Segmentation.Status``):

  ====================================================  ===========
  case state                                            status
  ====================================================  ===========
  received, admitted, deidentified, preprocessed        not started
  annotating                                            in progress
  in_review, arbitration, qc, frozen                    completed
  exception; or the annotation (or the case) flagged    flagged
  ====================================================  ===========

  and the tags ``MultiModalAnnotation.CaseState`` (the state) and
  ``MultiModalAnnotation.Uncertainty`` (the flag's category, when flagged);
* :func:`write_case_node` / :func:`read_case_node` - one ``vtkMRMLScriptedModuleNode`` per case
  (attribute ``MultiModalAnnotation.Role`` = ``CaseWorkflow``) holding the case folder, the state
  and the summary the panel shows (state, versions, reviews, flags, allowed steps, history).

The scene is always an argument; no application, widget or file dialog is used here.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List, Mapping, Optional, Sequence

import slicer

from ..provenance.workflow import CaseState, State

ROLE = "MultiModalAnnotation.Role"
ROLE_CASE = "CaseWorkflow"
ATTR_CASE_ID = "MultiModalAnnotation.CaseId"
ATTR_CASE_FOLDER = "MultiModalAnnotation.CaseFolder"
ATTR_STATE = "MultiModalAnnotation.CaseState"
SUMMARY_PARAMETER = "CaseSummary"
HISTORY_PARAMETER = "CaseHistory"
TAG_CASE_STATE = "MultiModalAnnotation.CaseState"
TAG_UNCERTAINTY = "MultiModalAnnotation.Uncertainty"
CASE_TARGET = "case"

_NOT_STARTED = (State.RECEIVED, State.ADMITTED, State.DEIDENTIFIED, State.PREPROCESSED)
_COMPLETED = (State.IN_REVIEW, State.ARBITRATION, State.QC, State.FROZEN)


def _logic() -> Any:
    return slicer.vtkSlicerSegmentationsModuleLogic


def status_for(state: State, annotation_id: str, flags: Mapping[str, Any]) -> str:
    """The machine-readable Slicer segment status (notstarted, inprogress, completed, flagged)."""
    if state == State.EXCEPTION or annotation_id in flags or CASE_TARGET in flags:
        return "flagged"
    if state in _NOT_STARTED:
        return "notstarted"
    if state == State.ANNOTATING:
        return "inprogress"
    return "completed"


def apply_case_state(segmentation_node: Any, case_state: CaseState) -> Dict[str, str]:
    """Set every segment's status from the case state (see the module docstring); returns
    ``segment id -> status``."""
    logic = _logic()
    segmentation = segmentation_node.GetSegmentation()
    statuses: Dict[str, str] = {}
    for n in range(segmentation.GetNumberOfSegments()):
        segment_id = segmentation.GetNthSegmentID(n)
        segment = segmentation.GetSegment(segment_id)
        status = status_for(case_state.state, segment_id, case_state.flags)
        logic.SetSegmentStatus(segment, logic.GetSegmentStatusFromMachineReadableString(status))
        segment.SetTag(TAG_CASE_STATE, case_state.state.value)
        flag = case_state.flags.get(segment_id) or case_state.flags.get(CASE_TARGET)
        if flag:
            segment.SetTag(TAG_UNCERTAINTY, str(flag["category"]))
        else:
            segment.RemoveTag(TAG_UNCERTAINTY)
        statuses[segment_id] = status
    segmentation_node.Modified()
    return statuses


def segment_statuses(segmentation_node: Any) -> Dict[str, str]:
    """``segment id -> machine-readable status`` as Slicer reads it."""
    logic = _logic()
    segmentation = segmentation_node.GetSegmentation()
    out = {}
    for n in range(segmentation.GetNumberOfSegments()):
        segment_id = segmentation.GetNthSegmentID(n)
        code = logic.GetSegmentStatus(segmentation.GetSegment(segment_id))
        out[segment_id] = logic.GetSegmentStatusAsMachineReadableString(code)
    return out


def find_case_node(scene: Any, case_id: str) -> Optional[Any]:
    """The scene's node of case ``case_id`` (None when there is none)."""
    nodes = scene.GetNodesByClass("vtkMRMLScriptedModuleNode")
    for n in range(nodes.GetNumberOfItems()):
        node = nodes.GetItemAsObject(n)
        if node.GetAttribute(ROLE) == ROLE_CASE and node.GetAttribute(ATTR_CASE_ID) == case_id:
            return node
    return None


def write_case_node(scene: Any, case_state: CaseState, folder: str,
                    history: Sequence[Mapping[str, Any]] = ()) -> Any:
    """The case's node (made or updated): folder, state, summary and history (JSON parameters)."""
    node = find_case_node(scene, case_state.case_id)
    if node is None:
        node = scene.AddNewNodeByClass("vtkMRMLScriptedModuleNode", f"Case {case_state.case_id}")
        node.SetAttribute(ROLE, ROLE_CASE)
        node.SetAttribute(ATTR_CASE_ID, case_state.case_id)
    node.SetAttribute(ATTR_CASE_FOLDER, str(folder))
    node.SetAttribute(ATTR_STATE, case_state.state.value)
    node.SetParameter(SUMMARY_PARAMETER, json.dumps(case_state.to_dict(), ensure_ascii=False))
    node.SetParameter(HISTORY_PARAMETER, json.dumps(list(history), ensure_ascii=False))
    return node


def read_case_node(node: Any) -> Dict[str, Any]:
    """{case, folder, state, summary, history} of a case node."""
    if node is None or node.GetAttribute(ROLE) != ROLE_CASE:
        raise ValueError("node: not a MultiModalAnnotation case node")
    history: List[Dict[str, Any]] = json.loads(node.GetParameter(HISTORY_PARAMETER) or "[]")
    return {"case": node.GetAttribute(ATTR_CASE_ID), "folder": node.GetAttribute(ATTR_CASE_FOLDER),
            "state": node.GetAttribute(ATTR_STATE), "summary": json.loads(node.GetParameter(SUMMARY_PARAMETER) or "{}"),
            "history": history}


def history_lines(history: Sequence[Mapping[str, Any]]) -> List[str]:
    """One line per event for the panel's history list."""
    lines = []
    for row in history:
        move = f" {row['transition']}" if row.get("transition") else ""
        reason = f" - {row['reason']}" if row.get("reason") else ""
        lines.append(f"#{row['seq']} {row['time']} {row['actor']} ({row['role']}) {row['action']}{move}{reason}")
    return lines
