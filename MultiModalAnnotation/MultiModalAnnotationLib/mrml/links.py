"""Scene adapter: reports, image-text links and structured records <-> MRML nodes (R-8.4.2, R-8.4.3).

* each report -> a ``vtkMRMLTextNode`` (text as is; attributes ``MultiModalAnnotation.Role`` =
  ``Report``, ``...ReportId``, ``...Language``, ``...SHA256``, ``...Title``), referenced by the
  document node (role ``MultiModalAnnotation.Reports``);
* each link -> an attribute ``MultiModalAnnotation.Link.<id>`` of its report's text node (the
  link's JSON) and a node reference of the same role from the text node to the node that shows the
  target (the segmentation for a mask - the segment ID is the annotation id -, the point list for a
  point - the control point label is the annotation id -, the ROI or closed curve of a box or
  polygon); the panel follows the reference to jump to the region;
* each structured table -> a ``vtkMRMLTableNode`` (one string column per table column, one row
  per record, values in the field's canonical text) with the field definitions and the records'
  keys, flags and time-deviation tags in the attribute ``MultiModalAnnotation.StructuredTable``,
  referenced by the document node (role ``MultiModalAnnotation.Tables``).

:func:`links_to_scene` and :func:`links_from_scene` are called by
:func:`.documents.scene_from_document` and :func:`.documents.document_from_scene`, so a document
keeps its reports, links and records through the scene exactly.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List, Optional, Tuple

import vtk

from ..documents import AnnotationDocument
from ..links import ReportLinks, TextLink, reanchor_section, report_links_of
from ..reports_text import Report
from ..structured import FieldDefinitions, Record, Table

ROLE = "MultiModalAnnotation.Role"
ROLE_REPORT = "Report"
ROLE_TABLE = "StructuredTable"
REF_REPORTS = "MultiModalAnnotation.Reports"
REF_TABLES = "MultiModalAnnotation.Tables"
LINK_PREFIX = "MultiModalAnnotation.Link."
ATTR_REPORT_ID = "MultiModalAnnotation.ReportId"
ATTR_LANGUAGE = "MultiModalAnnotation.Language"
ATTR_SHA256 = "MultiModalAnnotation.SHA256"
ATTR_TITLE = "MultiModalAnnotation.Title"
ATTR_TABLE = "MultiModalAnnotation.StructuredTable"
ATTR_STRUCTURED_KEYS = "MultiModalAnnotation.StructuredKeys"


def report_text_node(scene: Any, report: Report) -> Any:
    """A ``vtkMRMLTextNode`` holding ``report``."""
    node = scene.AddNewNodeByClass("vtkMRMLTextNode", report.title or report.id)
    node.SetText(report.text)
    node.SetAttribute(ROLE, ROLE_REPORT)
    node.SetAttribute(ATTR_REPORT_ID, report.id)
    node.SetAttribute(ATTR_LANGUAGE, report.language)
    node.SetAttribute(ATTR_SHA256, report.sha256)
    if report.title:
        node.SetAttribute(ATTR_TITLE, report.title)
    return node


def report_from_text_node(node: Any) -> Report:
    """The report of a text node (its id and title from the attributes; the language detected
    again when the text was edited in the scene)."""
    text = node.GetText() or ""
    report_id = node.GetAttribute(ATTR_REPORT_ID) or node.GetName()
    language = node.GetAttribute(ATTR_LANGUAGE) or ""
    if node.GetAttribute(ATTR_SHA256) != Report(report_id, text, language).sha256:
        language = ""  # edited in the scene: detected again (links are re-anchored by links_from_scene)
    return Report(report_id, text, language, node.GetAttribute(ATTR_TITLE) or "")


def target_node(nodes: Any, document: AnnotationDocument, annotation_id: str) -> Any:
    """The node that shows annotation ``annotation_id`` (``nodes``: :class:`.documents.DocumentNodes`)."""
    kind = document.annotation(annotation_id).type
    if kind == "mask":
        return nodes.segmentation
    if kind == "point":
        return nodes.points
    for shape in nodes.shapes:
        if shape.GetName() == annotation_id:
            return shape
    return nodes.document_node  # attribute annotations live on the document node


def links_to_scene(scene: Any, document: AnnotationDocument, nodes: Any) -> Tuple[List[Any], List[Any]]:
    """Text nodes for the reports (with the links) and table nodes for the structured records."""
    section = report_links_of(document)
    text_nodes: Dict[str, Any] = {}
    for report in section.reports:
        node = report_text_node(scene, report)
        nodes.document_node.AddNodeReferenceID(REF_REPORTS, node.GetID())
        text_nodes[report.id] = node
    for link in section.links:
        node = text_nodes[link.text.report_id]
        node.SetAttribute(LINK_PREFIX + link.id, json.dumps(link.to_dict(), ensure_ascii=False))
        target = target_node(nodes, document, link.target)
        if target is not None:
            node.SetNodeReferenceID(LINK_PREFIX + link.id, target.GetID())
    tables = []
    if document.structured_data:
        data = dict(document.structured_data)
        nodes.document_node.SetAttribute(ATTR_STRUCTURED_KEYS, json.dumps(
            {"keys": data["keys"], "time_deviation_days": data.get("time_deviation_days")}, ensure_ascii=False))
        for raw in data.get("tables", []):
            node = table_node(scene, raw)
            nodes.document_node.AddNodeReferenceID(REF_TABLES, node.GetID())
            tables.append(node)
    return list(text_nodes.values()), tables


def link_ids(node: Any) -> List[str]:
    """Ids of the links stored on a report text node, in the order they were added."""
    return [name[len(LINK_PREFIX):] for name in node.GetAttributeNames() if name.startswith(LINK_PREFIX)]


def links_from_scene(document_node: Any) -> Tuple[Optional[Dict[str, Any]], Optional[Dict[str, Any]]]:
    """(report_links, structured_data) JSON sections held by the document node's referenced nodes."""
    reports: List[Report] = []
    links: List[TextLink] = []
    for n in range(document_node.GetNumberOfNodeReferences(REF_REPORTS)):
        node = document_node.GetNthNodeReference(REF_REPORTS, n)
        reports.append(report_from_text_node(node))
        for ident in link_ids(node):
            links.append(TextLink.from_dict(json.loads(node.GetAttribute(LINK_PREFIX + ident))))
    order = document_node.GetAttribute(LINK_PREFIX + "Order")
    if order:
        rank = {ident: n for n, ident in enumerate(json.loads(order))}
        links.sort(key=lambda item: rank.get(item.id, len(rank)))
    section = ReportLinks(tuple(reports), tuple(links))
    for n in range(document_node.GetNumberOfNodeReferences(REF_REPORTS)):
        node = document_node.GetNthNodeReference(REF_REPORTS, n)
        stored = node.GetAttribute(ATTR_SHA256)
        report = report_from_text_node(node)
        if stored and stored != report.sha256:  # edited in the scene: re-anchor, never shift silently
            section, _ = reanchor_section(section, report.id, report.text, stored)
    report_links = section.to_dict() if (reports or links) else None
    structured: Optional[Dict[str, Any]] = None
    keys = document_node.GetAttribute(ATTR_STRUCTURED_KEYS)
    if keys:
        head = json.loads(keys)
        structured = {"keys": head["keys"]}
        if head.get("time_deviation_days") is not None:
            structured["time_deviation_days"] = head["time_deviation_days"]
        structured["tables"] = [table_from_node(document_node.GetNthNodeReference(REF_TABLES, n))
                                for n in range(document_node.GetNumberOfNodeReferences(REF_TABLES))]
    return report_links, structured


def store_link_order(document_node: Any, document: AnnotationDocument) -> None:
    """Keep the document's link order (attributes of a node have no order of their own)."""
    ids = [item.id for item in report_links_of(document).links]
    document_node.SetAttribute(LINK_PREFIX + "Order", json.dumps(ids))


# --------------------------------------------------------------------------- tables
def table_node(scene: Any, raw: Dict[str, Any]) -> Any:
    """A ``vtkMRMLTableNode`` for one table of a document's ``structured_data`` (JSON)."""
    fields = FieldDefinitions.from_dict(raw["fields"])
    node = scene.AddNewNodeByClass("vtkMRMLTableNode", raw["id"])
    node.SetAttribute(ROLE, ROLE_TABLE)
    table = node.GetTable()
    definitions = [fields.get(c) for c in raw["columns"]]
    for name in raw["columns"]:
        column = vtk.vtkStringArray()
        column.SetName(name)
        table.AddColumn(column)
    for record in raw["records"]:
        row = table.InsertNextBlankRow()
        for n, definition in enumerate(definitions):
            assert definition is not None
            table.SetValue(row, n, vtk.vtkVariant(definition.text(record["values"].get(definition.name))))
    meta = {k: v for k, v in raw.items() if k != "records"}
    meta["records"] = [{k: v for k, v in r.items() if k != "values"} for r in raw["records"]]
    node.SetAttribute(ATTR_TABLE, json.dumps(meta, ensure_ascii=False))
    for n, definition in enumerate(definitions):
        if definition is not None and definition.unit:
            node.SetColumnUnitLabel(raw["columns"][n], definition.unit)
        if definition is not None and definition.description:
            node.SetColumnDescription(raw["columns"][n], definition.description)
    node.Modified()
    return node


def table_from_node(node: Any) -> Dict[str, Any]:
    """The ``structured_data`` table JSON of a table node written by :func:`table_node`; the cells
    are parsed again through the field definitions (a value edited in the scene is validated)."""
    meta = json.loads(node.GetAttribute(ATTR_TABLE))
    fields = FieldDefinitions.from_dict(meta["fields"])
    table = node.GetTable()
    records = []
    for r, record in enumerate(meta["records"]):
        values: Dict[str, Any] = {}
        for n, name in enumerate(meta["columns"]):
            definition = fields.get(name)
            assert definition is not None
            try:
                values[name] = definition.parse(table.GetValue(r, n).ToString())
            except ValueError as exc:
                raise ValueError(f"table {meta['id']}, row {record['row']}, column {name}: {exc}") from None
        entry = {**record, "values": values}
        entry.pop("flags", None)
        flags: Dict[str, str] = {}
        for name in meta["columns"]:
            definition = fields.get(name)
            flag = definition.flag(values[name]) if definition is not None else None
            if flag:
                flags[name] = flag
        if flags:
            entry["flags"] = flags
        records.append(entry)
    out = {k: meta[k] for k in ("id", "fields", "columns", "source") if k in meta}
    out["records"] = records
    return out


def table_as_core(node: Any) -> Table:
    """The :class:`~MultiModalAnnotationLib.structured.Table` of a table node."""
    raw = table_from_node(node)
    return Table(raw["id"], FieldDefinitions.from_dict(raw["fields"]), tuple(raw["columns"]),
                 tuple(Record.from_dict(r) for r in raw["records"]), raw.get("source", {}))


# --------------------------------------------------------------------------- editing in the scene (panel)
def document_nodes_of(document_node: Any) -> Any:
    """The :class:`.documents.DocumentNodes` of a document node (from its references)."""
    from .documents import REF_POINTS, REF_SEGMENTATION, REF_SHAPES, DocumentNodes

    nodes = DocumentNodes(document_node, document_node.GetNodeReference(REF_SEGMENTATION),
                          document_node.GetNodeReference(REF_POINTS))
    nodes.shapes = [document_node.GetNthNodeReference(REF_SHAPES, n)
                    for n in range(document_node.GetNumberOfNodeReferences(REF_SHAPES))]
    nodes.reports = [document_node.GetNthNodeReference(REF_REPORTS, n)
                     for n in range(document_node.GetNumberOfNodeReferences(REF_REPORTS))]
    nodes.tables = [document_node.GetNthNodeReference(REF_TABLES, n)
                    for n in range(document_node.GetNumberOfNodeReferences(REF_TABLES))]
    return nodes


def report_node_of(document_node: Any, report_id: str) -> Any:
    """The text node of report ``report_id`` (None when the document has no such report)."""
    for node in document_nodes_of(document_node).reports:
        if node.GetAttribute(ATTR_REPORT_ID) == report_id:
            return node
    return None


def add_report_node(document_node: Any, report: Report) -> Any:
    """Add ``report`` to the document held by ``document_node`` (a new text node)."""
    if report_node_of(document_node, report.id) is not None:
        raise ValueError(f"report.id: the document already has a report {report.id}")
    node = report_text_node(document_node.GetScene(), report)
    document_node.AddNodeReferenceID(REF_REPORTS, node.GetID())
    return node


def store_links(document_node: Any, document: AnnotationDocument) -> None:
    """Write the links of ``document`` (after an edit or a check) onto the report text nodes: every
    old link attribute and reference is replaced, so the scene holds exactly the document's links."""
    nodes = document_nodes_of(document_node)
    for node in nodes.reports:
        for ident in link_ids(node):
            node.RemoveAttribute(LINK_PREFIX + ident)
            node.RemoveNodeReferenceIDs(LINK_PREFIX + ident)
    for link in report_links_of(document).links:
        node = report_node_of(document_node, link.text.report_id)
        if node is None:
            raise ValueError(f"link {link.id}: the scene has no text node of report {link.text.report_id}")
        node.SetAttribute(LINK_PREFIX + link.id, json.dumps(link.to_dict(), ensure_ascii=False))
        target = target_node(nodes, document, link.target)
        if target is not None:
            node.SetNodeReferenceID(LINK_PREFIX + link.id, target.GetID())
    store_link_order(document_node, document)


def store_tables(document_node: Any, document: AnnotationDocument) -> List[Any]:
    """Replace the document node's table nodes by the tables of ``document``'s structured data."""
    scene = document_node.GetScene()
    for node in document_nodes_of(document_node).tables:
        scene.RemoveNode(node)
    document_node.RemoveNodeReferenceIDs(REF_TABLES)
    tables = []
    if document.structured_data:
        data = dict(document.structured_data)
        document_node.SetAttribute(ATTR_STRUCTURED_KEYS, json.dumps(
            {"keys": data["keys"], "time_deviation_days": data.get("time_deviation_days")}, ensure_ascii=False))
        for raw in data.get("tables", []):
            node = table_node(scene, raw)
            document_node.AddNodeReferenceID(REF_TABLES, node.GetID())
            tables.append(node)
    return tables
