"""Scene adapter: a QC result -> ``vtkMRMLTableNode`` (the Slicer table lists the registry metrics
with their titles, units and definitions, one row per label, flagged rows marked).

Column names are the registry's machine names (stable for scripts); each column's long name,
unit and description come from the same registry the report and the command line use. Undefined
values are NaN in the table; the row's "Reasons" column says why. MRML and VTK only.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

import vtk

from ..metrics import PAIR_METRICS

LABEL_COLUMN = "label"
REVIEW_COLUMN = "special_review"
REASONS_COLUMN = "reasons"


def table_columns(locale: str = "en") -> List[Dict[str, str]]:
    """(name, title, unit, description) of every column, in order."""
    columns = [{"name": LABEL_COLUMN, "title": "Label", "unit": "", "description": "template code or name"}]
    columns += [{"name": m.name, "title": m.localized_title(locale), "unit": m.unit, "description": m.definition}
                for m in PAIR_METRICS]
    columns += [{"name": REVIEW_COLUMN, "title": "Special review", "unit": "",
                 "description": "yes when the label goes to special review (R-10.2)"},
                {"name": REASONS_COLUMN, "title": "Reasons", "unit": "",
                 "description": "why a value is undefined or why the label is flagged"}]
    return columns


def table_node_from_result(scene: Any, result: Dict[str, Any], name: str = "QC metrics", node: Any = None,
                           locale: str = "en") -> Any:
    """Create (or refill) a table node with one row per label of a ``compare`` result."""
    if node is None:
        node = scene.AddNewNodeByClass("vtkMRMLTableNode", name)
    table = vtk.vtkTable()
    arrays: Dict[str, Any] = {}
    for column in table_columns(locale):
        if column["name"] in (LABEL_COLUMN, REVIEW_COLUMN, REASONS_COLUMN):
            array = vtk.vtkStringArray()
        elif column["name"] in ("tp", "fp", "fn", "tn"):
            array = vtk.vtkLongLongArray()
        else:
            array = vtk.vtkDoubleArray()
        array.SetName(column["name"])
        table.AddColumn(array)
        arrays[column["name"]] = array
    for entry in result["labels"]:
        for column in table_columns(locale):
            key = column["name"]
            array = arrays[key]
            if key == LABEL_COLUMN:
                array.InsertNextValue(str(entry["label"]))
            elif key == REVIEW_COLUMN:
                array.InsertNextValue("yes" if entry["special_review"] else "no")
            elif key == REASONS_COLUMN:
                reasons = list(entry.get("review_reasons", [])) + [f"{k}: {v}" for k, v in entry["reasons"].items()]
                array.InsertNextValue("; ".join(reasons))
            elif isinstance(array, vtk.vtkLongLongArray):
                array.InsertNextValue(int(entry[key]))
            else:
                value: Optional[float] = entry.get(key)
                array.InsertNextValue(float("nan") if value is None else float(value))
    node.SetAndObserveTable(table)
    for column in table_columns(locale):
        node.SetColumnLongName(column["name"], column["title"])
        node.SetColumnUnitLabel(column["name"], column["unit"])
        node.SetColumnDescription(column["name"], column["description"])
    node.SetAttribute("QCMetrics.CaseId", str(result.get("case_id", "")))
    node.SetAttribute("QCMetrics.Verdict", str(result["verdict"]["status"]))
    node.SetAttribute("QCMetrics.DiceThreshold", str(result["options"]["dice_threshold"]))
    return node


def flagged_rows(node: Any) -> List[int]:
    """Row indices of labels in special review."""
    table = node.GetTable()
    column = table.GetColumnByName(REVIEW_COLUMN)
    return [r for r in range(table.GetNumberOfRows()) if column.GetValue(r) == "yes"]
