"""Scene adapters of reports, image-text links and structured records on the real MRML scene of
slicer-core (R-8.4.2, R-8.4.3): vtkMRMLTextNode, node references and attributes, vtkMRMLTableNode."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Tuple

import numpy as np
import pytest

from MultiModalAnnotationLib.consistency import check_links
from MultiModalAnnotationLib.documents import AnnotationDocument, document_problems
from MultiModalAnnotationLib.links import add_link, add_report, report_links_of
from MultiModalAnnotationLib.reports_text import Report
from MultiModalAnnotationLib.seed_tables import CLINICAL, export_seed001_clinical, import_seed001_clinical
from MultiModalAnnotationLib.structured import CaseKeys, ImageKey, builtin_field_definitions, read_table
from MultiModalAnnotationLib.templates import builtin_template

from .test_links import lung_case
from .test_mrml_annotation import assert_documents_match

pytestmark = pytest.mark.slicer
TEXT = ("检查所见：右肺上叶见一实性结节，大小约1.5 cm。左肺下叶小结节，约8 mm。\n"
        "Impression: 2 nodules; follow-up in 3 mo.")


def linked_document(tmp_path: Path) -> Tuple[AnnotationDocument, Any]:
    """The lung case with a report, three links (mask targets and a point target), a seed 001
    clinical table bound to point annotations, and the consistency aids run."""
    doc, masks = lung_case()
    template = builtin_template("lung-ct")
    (tmp_path / "c.csv").write_text("Order,分类,病理分型,ID,X,Y,Z,TNM分期,临床分期\n"
                                    "1,恶性,腺癌,P0001,20,30,15,T1bN0M0,IA2\n2,良性,,P0001,60,30,5,,\n", "utf-8")
    table = read_table(str(tmp_path / "c.csv"), builtin_field_definitions(CLINICAL))
    doc = import_seed001_clinical(doc, table, CaseKeys("P0001", (ImageKey("1.2.3", "", "2024-01-02"),)), template)
    doc = add_report(doc, Report("RPT_CT", TEXT, title="CT chest"))
    a = TEXT.index("右肺上叶")
    doc, _ = add_link(doc, "RPT_CT", a, TEXT.index("。", a) + 1, "NODULE_A", "finding", "A01",
                      time="2026-01-01T00:00:00Z")
    b = TEXT.index("左肺下叶")
    doc, _ = add_link(doc, "RPT_CT", b, TEXT.index("。", b) + 1, "NODULE_02_POINT", "finding", "A01",
                      time="2026-01-01T00:01:00Z")
    c = TEXT.index("follow-up")
    doc, _ = add_link(doc, "RPT_CT", c, len(TEXT), "NODULE_B", "recommendation", "A01", time="2026-01-01T00:02:00Z")
    doc, _ = check_links(doc, template, masks)
    assert document_problems(doc.to_dict()) == []
    return doc, masks


def test_links_and_records_document_scene_document(mrml_scene: Any, tmp_path: Path) -> None:
    """Must show: links (and records) survive document -> scene -> document exactly: the report is a
    vtkMRMLTextNode, each link an attribute plus a node reference to the node showing its target,
    the records a vtkMRMLTableNode."""
    from MultiModalAnnotationLib.mrml.documents import document_from_scene, scene_from_document
    from MultiModalAnnotationLib.mrml.links import LINK_PREFIX, ROLE, ROLE_REPORT

    doc, masks = linked_document(tmp_path)
    template = builtin_template("lung-ct")
    nodes = scene_from_document(mrml_scene, doc, template, masks)
    assert len(nodes.reports) == 1 and nodes.reports[0].IsA("vtkMRMLTextNode")
    text_node = nodes.reports[0]
    assert text_node.GetText() == TEXT and text_node.GetAttribute(ROLE) == ROLE_REPORT
    assert text_node.GetNodeReference(LINK_PREFIX + "TXT_SPAN_01") is nodes.segmentation
    assert text_node.GetNodeReference(LINK_PREFIX + "TXT_SPAN_02") is nodes.points
    assert len(nodes.tables) == 1 and nodes.tables[0].IsA("vtkMRMLTableNode")
    table = nodes.tables[0]
    assert table.GetNumberOfRows() == 2 and table.GetColumnName(1) == "分类"
    assert table.GetCellText(0, 4) == "20" and table.GetColumnUnitLabel("X") == "pixel"
    back, _ = document_from_scene(mrml_scene, template=template)
    assert back.report_links == doc.report_links
    assert back.structured_data == doc.structured_data
    assert_documents_match(doc, back)
    assert document_problems(back.to_dict()) == []
    assert export_seed001_clinical(back).records == export_seed001_clinical(doc).records


def test_links_scene_document_scene_after_editing_the_report(mrml_scene: Any, tmp_path: Path) -> None:
    """Must show: scene -> document -> scene. The report is edited in its text node (a heading is
    inserted and the second finding deleted): reading the scene re-anchors the first link (moved)
    and marks the second stale - never shifted silently; writing that document to a new scene and
    reading it again gives the same document."""
    import slicer

    from MultiModalAnnotationLib.mrml.documents import document_from_scene, scene_from_document

    doc, masks = linked_document(tmp_path)
    template = builtin_template("lung-ct")
    nodes = scene_from_document(mrml_scene, doc, template, masks)
    edited = "【CT】" + TEXT.replace("左肺下叶小结节，约8 mm。", "")
    nodes.reports[0].SetText(edited)
    first, first_masks = document_from_scene(mrml_scene, template=template)
    links = {item.id: item for item in report_links_of(first).links}
    assert links["TXT_SPAN_01"].anchor_state == "moved"
    assert edited[links["TXT_SPAN_01"].text.start:links["TXT_SPAN_01"].text.end] == links["TXT_SPAN_01"].text.quote
    assert links["TXT_SPAN_02"].anchor_state == "stale"
    assert (links["TXT_SPAN_02"].text.start, links["TXT_SPAN_02"].text.end) == \
        (report_links_of(doc).link("TXT_SPAN_02").text.start, report_links_of(doc).link("TXT_SPAN_02").text.end)
    assert document_problems(first.to_dict()) == []
    second_scene = slicer.vtkMRMLScene()
    try:
        scene_from_document(second_scene, first, template, first_masks)
        second, second_masks = document_from_scene(second_scene, template=template)
    finally:
        second_scene.Clear(1)
    assert second.report_links == first.report_links and second.structured_data == first.structured_data
    assert_documents_match(first, second)
    assert all(np.array_equal(second_masks[k], first_masks[k]) for k in first_masks)


def test_table_node_edit_is_validated(mrml_scene: Any, tmp_path: Path) -> None:
    """A value typed into the table node is parsed through its field definition: a valid edit
    reaches the document, an invalid one is refused with its row and column."""
    from MultiModalAnnotationLib.mrml.documents import document_from_scene, scene_from_document

    doc, masks = linked_document(tmp_path)
    template = builtin_template("lung-ct")
    nodes = scene_from_document(mrml_scene, doc, template, masks)
    table = nodes.tables[0]
    table.SetCellText(0, 8, "IB")  # 临床分期
    back, _ = document_from_scene(mrml_scene, template=template)
    assert back.structured_data["tables"][0]["records"][0]["values"]["临床分期"] == "IB"  # type: ignore[index]
    table.SetCellText(1, 1, "可能恶性")
    with pytest.raises(ValueError, match="row 3, column 分类: '可能恶性' is not one of the allowed values"):
        document_from_scene(mrml_scene, template=template)


def test_panel_logic_links_and_tables_on_the_scene(slicer_modules: Any, mrml_scene: Any, tmp_path: Path) -> None:
    """The panel's Logic (R-8.4.2, R-8.4.3): load a report into a text node, link a span selected in a
    Qt widget (UTF-16 positions, a character beyond the BMP before it), check it, list it, find its
    region's centre; import a table and list the case's values with units and flags."""
    from MultiModalAnnotationLib.mrml.documents import TEMPLATE_SOURCE, document_from_scene, scene_from_document
    from RTSSBridgeLib.geometry import lps_to_ras

    doc, masks = lung_case()
    template = builtin_template("lung-ct")
    nodes = scene_from_document(mrml_scene, doc, template, masks)
    nodes.document_node.SetAttribute(TEMPLATE_SOURCE, "lung-ct")
    text = "𠮷 右肺上叶见一实性结节，大小约4.5 cm。左肺清晰。"
    (tmp_path / "report.txt").write_text(text, "utf-8")
    logic = slicer_modules["MultiModalAnnotation"].MultiModalAnnotationLogic()
    report_node = logic.loadReport(nodes.document_node, str(tmp_path / "report.txt"))
    assert report_node.IsA("vtkMRMLTextNode") and report_node.GetText() == text
    assert "NODULE_A" in logic.linkTargets(nodes.document_node)
    start = text.index("右")
    end = text.index("。") + 1
    link_id = logic.addLink(nodes.document_node, report_node, start + 1, end + 1, "NODULE_A", "finding", "A01")
    counts = logic.checkLinks(nodes.document_node)
    assert counts == {"inconsistent": 1}
    rows = logic.linkRows(nodes.document_node)
    assert rows[0][:5] == [link_id, text[start:end], "NODULE_A", "finding", "inconsistent"]
    centre = logic.linkRegionCentreRas(nodes.document_node, link_id)
    assert np.allclose(centre, lps_to_ras(lung_case()[0].image.geometry.ijk_to_lps([20, 30, 14])), atol=0.5)
    back, _ = document_from_scene(mrml_scene, nodes.document_node, template)
    assert report_links_of(back).link(link_id).text.quote == text[start:end]
    logic.confirmLink(nodes.document_node, link_id, "consistent", "4.5 cm includes the spiculae", "R01")
    assert logic.checkLinks(nodes.document_node) == {"consistent": 1}  # the person's decision is kept
    assert logic.linkRows(nodes.document_node)[0][4] == "consistent ✓"
    with pytest.raises(Exception, match="needs a note"):
        logic.confirmLink(nodes.document_node, link_id, "inconsistent", "", "R01")
    (tmp_path / "lab.csv").write_text("ID,Gender,age,Smoke,statue_death,survival\nP1,F,61,never,0,12.5\n"
                                      "P2,M,70,current,1,3\n", "utf-8")
    tables = logic.importTable(nodes.document_node, str(tmp_path / "lab.csv"), "seed001-follow-up", "P1")
    assert len(tables) == 1 and tables[0].GetNumberOfRows() == 1
    values = {r[2]: (r[3], r[4]) for r in logic.structuredRows(nodes.document_node)}
    assert values["age"] == ("61", "year") and values["survival"] == ("12.5", "mo")
    with pytest.raises(Exception, match="row 2, column C"):
        (tmp_path / "bad.csv").write_text("ID,Gender,age,Smoke,statue_death,survival\nP1,F,old,never,0,1\n", "utf-8")
        logic.importTable(nodes.document_node, str(tmp_path / "bad.csv"), "seed001-follow-up", "P1")
