"""Image-text links (R-8.4.2): links in the annotation document, round trips, re-anchoring, QC
findings of inconsistent links, and the consistency aids over crafted zh/en report/region pairs."""

from __future__ import annotations

import copy
import json
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import pytest

from MultiModalAnnotationLib.claims import extract_claims
from MultiModalAnnotationLib.consistency import check_link, check_links, mask_diameters_mm
from MultiModalAnnotationLib.documents import (
    Annotation,
    AnnotationDocument,
    DocumentError,
    document_from_dict,
    document_problems,
    read_document,
    write_document,
)
from MultiModalAnnotationLib.links import (
    add_link,
    add_report,
    confirm_consistency,
    link_findings,
    remove_link,
    report_links_of,
    update_report_text,
)
from MultiModalAnnotationLib.reports_text import Report
from MultiModalAnnotationLib.templates import builtin_template
from RTSSBridgeLib.errors import InputError
from RTSSBridgeLib.geometry import ImageGeometry

#: LPS x = -40 + i (mm): i < 40 is the patient's right, i > 40 the left. Slices 2 mm (anisotropic).
GRID = ImageGeometry((80, 60, 20), (1.0, 1.0, 2.0), (-40.0, -30.0, 0.0))
OBLIQUE = ImageGeometry((80, 60, 20), (1.0, 1.0, 2.0), (-40.0, -30.0, 0.0),
                        ((0.9781476, 0.0, 0.2079117), (0.0, 1.0, 0.0), (-0.2079117, 0.0, 0.9781476)))


def _ball(centre_ijk: Tuple[float, float, float], radius_mm: float, g: ImageGeometry) -> np.ndarray:
    k, j, i = np.indices(g.array_shape)
    ijk = np.stack([i, j, k], axis=-1).reshape(-1, 3).astype(float)
    d = np.linalg.norm(g.ijk_to_lps(ijk) - g.ijk_to_lps(np.asarray(centre_ijk, float)), axis=1)
    return (d <= radius_mm).reshape(g.array_shape)


def _box(i: Tuple[int, int], j: Tuple[int, int], k: Tuple[int, int], g: ImageGeometry) -> np.ndarray:
    m = np.zeros(g.array_shape, dtype=bool)
    m[k[0]:k[1], j[0]:j[1], i[0]:i[1]] = True
    return m


def _document(template_id: str, modality: str, annotations: List[Tuple[str, str, str, Dict[str, Any]]],
              g: ImageGeometry = GRID) -> AnnotationDocument:
    data = {"schema": "https://multimodalannotation.github.io/schemas/annotation/v1", "task_id": "TASK_LINKS",
            "template": {"id": template_id, "version": builtin_template(template_id).version},
            "image": {"uid": "1.2.826.0.1.3680043.8.498.1", "modality": modality, "shape": list(g.shape),
                      "spacing": list(g.spacing_mm), "origin": list(g.origin_lps),
                      "direction": [list(r) for r in g.direction]},
            "annotations": [{"id": ident, "category": category, "label_code": code, "type": "mask",
                             "data": {"mask_file": f"masks/{ident}.nii.gz", **extra}}
                            for ident, category, code, extra in annotations],
            "metadata": {"annotator": "A01", "software": {"name": "MultiModalAnnotation", "version": "0.1"},
                         "timestamps": {"start": "2026-01-01T00:00:00Z", "end": "2026-01-01T01:00:00Z"},
                         "version": "v1"}}
    return document_from_dict(data)


def lung_case(g: ImageGeometry = GRID) -> Tuple[AnnotationDocument, Dict[str, np.ndarray]]:
    """Right lung (upper/lower lobe) and left lung (upper/lower lobe); a 15 mm nodule in the right
    upper lobe and an 8 mm nodule in the left lower lobe."""
    masks = {
        "LUNG_R": _box((3, 37), (5, 55), (0, 20), g), "LUNG_L": _box((43, 77), (5, 55), (0, 20), g),
        "RUL": _box((3, 37), (5, 55), (10, 20), g), "RLL": _box((3, 37), (5, 55), (0, 10), g),
        "LUL": _box((43, 77), (5, 55), (10, 20), g), "LLL": _box((43, 77), (5, 55), (0, 10), g),
        "NODULE_A": _ball((20, 30, 14), 7.5, g), "NODULE_B": _ball((60, 30, 4), 4.0, g),
    }
    for organ in ("LUNG_R", "LUNG_L", "RUL", "RLL", "LUL", "LLL"):
        masks[organ] = masks[organ] & ~masks["NODULE_A"] & ~masks["NODULE_B"]  # nodules sit in holes
    doc = _document("lung-ct", "CT", [
        ("LUNG_R", "organ", "LUNG_RIGHT", {}), ("LUNG_L", "organ", "LUNG_LEFT", {}),
        ("RUL", "organ", "LUNG_RIGHT_UPPER_LOBE", {}), ("RLL", "organ", "LUNG_RIGHT_LOWER_LOBE", {}),
        ("LUL", "organ", "LUNG_LEFT_UPPER_LOBE", {}), ("LLL", "organ", "LUNG_LEFT_LOWER_LOBE", {}),
        ("NODULE_A", "lesion", "NODULE", {}), ("NODULE_B", "lesion", "NODULE", {})], g)
    return doc, masks


def brain_case() -> Tuple[AnnotationDocument, Dict[str, np.ndarray]]:
    """Frontal lobe (right and left halves), temporal lobe; a ring-enhancing metastasis in the right
    frontal lobe and a non-enhancing one in the left temporal lobe."""
    g = GRID
    masks = {"BRAIN": _box((2, 78), (2, 58), (0, 20), g), "FRONTAL": _box((2, 78), (2, 30), (0, 20), g),
             "TEMPORAL": _box((2, 78), (30, 58), (0, 20), g),
             "MET_1": _ball((20, 15, 10), 6.0, g), "MET_2": _ball((62, 45, 10), 3.0, g)}
    doc = _document("brain-mets-mr", "MR", [
        ("BRAIN", "organ", "BRAIN", {}), ("FRONTAL", "organ", "BRAIN_FRONTAL_LOBE", {}),
        ("TEMPORAL", "organ", "BRAIN_TEMPORAL_LOBE", {}),
        ("MET_1", "lesion", "METASTASIS", {"attributes": {"enhancement": "ring", "roi_name": "R_frontal"}}),
        ("MET_2", "lesion", "METASTASIS", {"attributes": {"enhancement": "none", "roi_name": "L_temp"}})])
    return doc, masks


def _link(doc: AnnotationDocument, text: str, target: str, report_id: str = "RPT") -> Tuple[AnnotationDocument, Any]:
    if not any(r.id == report_id for r in report_links_of(doc).reports):
        doc = add_report(doc, Report(report_id, text))
    return add_link(doc, report_id, 0, len(text), target, "finding", actor="A01", time="2026-01-01T00:30:00Z")


#: (case, report sentence, target, expected state, aspect that must be flagged or None)
PAIRS: List[Tuple[str, str, str, str, Optional[str]]] = [
    # consistent: silent
    ("lung", "右肺上叶见一实性结节，大小约1.5 cm。", "NODULE_A", "consistent", None),
    ("lung", "A 15 mm solid nodule in the right upper lobe.", "NODULE_A", "consistent", None),
    ("lung", "左肺下叶小结节，约8毫米。", "NODULE_B", "consistent", None),
    ("lung", "Left lower lobe nodule, 0.8 cm.", "NODULE_B", "consistent", None),
    ("lung", "右侧结节，1.5×1.4 cm，距胸膜5 mm。", "NODULE_A", "consistent", None),
    ("lung", "Small left-sided nodule measuring less than 1 cm.", "NODULE_B", "consistent", None),
    ("lung", "右肺见结节，大小约14-16 mm。", "NODULE_A", "consistent", None),
    ("brain", "右侧额叶见环形强化灶，直径约1.2厘米。", "MET_1", "consistent", None),
    ("brain", "Ring-enhancing lesion in the right frontal lobe, 12 mm.", "MET_1", "consistent", None),
    ("brain", "左侧颞叶小结节，未见明显强化。", "MET_2", "consistent", None),
    ("brain", "Non-enhancing left temporal focus, 6 mm.", "MET_2", "consistent", None),
    # laterality mismatches
    ("lung", "左肺上叶见一实性结节，大小约1.5 cm。", "NODULE_A", "inconsistent", "laterality+location"),
    ("lung", "A 15 mm nodule in the left lung.", "NODULE_A", "inconsistent", "laterality+location"),
    ("lung", "左侧见一实性结节，大小约1.5 cm。", "NODULE_A", "inconsistent", "laterality"),
    ("lung", "右侧小结节，约8 mm。", "NODULE_B", "inconsistent", "laterality"),
    ("brain", "Ring-enhancing lesion in the left frontal lobe, 12 mm.", "MET_1", "inconsistent", "laterality"),
    # size mismatches
    ("lung", "右肺上叶见一肿块，大小约4.5×3.8 cm。", "NODULE_A", "inconsistent", "size"),
    ("lung", "Tiny 3 mm nodule in the right upper lobe.", "NODULE_A", "inconsistent", "size"),
    ("lung", "左肺下叶结节，约25毫米。", "NODULE_B", "inconsistent", "size"),
    ("brain", "右侧额叶环形强化灶，直径约3公分。", "MET_1", "inconsistent", "size"),
    # location mismatches
    ("lung", "右肺下叶见一实性结节，大小约1.5 cm。", "NODULE_A", "inconsistent", "location"),
    ("lung", "Left upper lobe nodule, 8 mm.", "NODULE_B", "inconsistent", "location"),
    ("brain", "右侧颞叶见环形强化灶，约12 mm。", "MET_1", "inconsistent", "location"),
    ("brain", "Left frontal lobe non-enhancing focus.", "MET_2", "inconsistent", "location"),
    # enhancement mismatches
    ("brain", "右侧额叶病灶未见强化。", "MET_1", "inconsistent", "enhancement"),
    ("brain", "左侧颞叶病灶明显强化。", "MET_2", "inconsistent", "enhancement"),
    # nothing checkable: unchecked, never a false alarm
    ("lung", "建议3个月后复查。", "NODULE_A", "unchecked", None),
]


@pytest.fixture(scope="module")
def cases() -> Dict[str, Tuple[AnnotationDocument, Dict[str, np.ndarray]]]:
    return {"lung": lung_case(), "brain": brain_case()}


@pytest.mark.parametrize("case,text,target,state,aspect", PAIRS,
                         ids=[f"pair{n:02d}-{p[3]}" for n, p in enumerate(PAIRS)])
def test_consistency_aids_on_crafted_pairs(cases: Dict[str, Any], case: str, text: str, target: str, state: str,
                                           aspect: Optional[str]) -> None:
    """Must show (R-8.4.2.4): over 27 crafted zh/en report/region pairs the aids flag laterality,
    size, location and enhancement mismatches with a reason, and stay silent on consistent pairs."""
    doc, masks = cases[case]
    template = builtin_template("lung-ct" if case == "lung" else "brain-mets-mr")
    doc, link = _link(doc, text, target)
    proposal = check_link(doc, link, template, masks)
    bad = [c["aspect"] for c in proposal.checks if c["result"] == "inconsistent"]
    assert proposal.state == state, proposal.note
    assert proposal.source == "automatic"
    if aspect is None:
        assert bad == []
    else:
        assert bad == aspect.split("+"), proposal.note
        assert proposal.note.startswith(f"{bad[0]}: ")


def test_pair_counts() -> None:
    langs = {"zh": 0, "en": 0}
    for _case, text, *_ in PAIRS:
        langs["zh" if any("\u4e00" <= ch <= "\u9fff" for ch in text) else "en"] += 1
    flagged = {a for p in PAIRS if p[4] for a in p[4].split("+")}
    assert len(PAIRS) >= 20 and min(langs.values()) >= 8
    assert flagged == {"laterality", "size", "location", "enhancement"}
    assert sum(1 for p in PAIRS if p[3] == "consistent") >= 10


def test_laterality_uses_patient_coordinates_on_an_oblique_grid() -> None:
    """The side comes from the centroid in LPS through ImageGeometry: on an oblique grid the same
    voxel indices still give the right side."""
    doc, masks = lung_case(OBLIQUE)
    template = builtin_template("lung-ct")
    doc, link = _link(doc, "右肺上叶见一实性结节，大小约1.5 cm。", "NODULE_A")
    assert check_link(doc, link, template, masks).state == "consistent"
    doc2, link2 = _link(lung_case(OBLIQUE)[0], "左侧结节，约1.5 cm。", "NODULE_A")
    assert check_link(doc2, link2, template, masks).state == "inconsistent"


def test_mask_diameter_is_physical() -> None:
    """A run of n voxels measures n voxels in millimetres along each axis (anisotropic spacing)."""
    m = _box((10, 25), (10, 11), (5, 6), GRID)
    assert mask_diameters_mm(m, GRID) == pytest.approx((15.0, 15.0))
    m = _box((10, 11), (10, 11), (5, 10), GRID)
    assert mask_diameters_mm(m, GRID)[0] == pytest.approx(10.0)


def test_claims_extraction() -> None:
    claims = extract_claims("右肺上叶见一结节，大小约1.5×1.2 cm，距胸膜5 mm，明显强化。")
    by = {(c.aspect, c.role): c for c in claims}
    assert by[("size", "claim")].value["values_mm"] == [15.0, 12.0]
    assert by[("size", "distance")].value["largest_mm"] == 5.0
    assert by[("location", "claim")].value["codes"] == ["LUNG_RIGHT_UPPER_LOBE"]
    assert by[("enhancement", "claim")].value == "marked"
    assert [c.value for c in extract_claims("左右径约3 cm") if c.aspect == "laterality"] == []
    assert [c.value for c in extract_claims("No enhancement.") if c.aspect == "enhancement"] == ["none"]


# --------------------------------------------------------------------------- links in the document
@pytest.fixture
def linked(cases: Dict[str, Any]) -> Tuple[AnnotationDocument, Dict[str, np.ndarray]]:
    doc, masks = cases["lung"]
    text = "检查所见：右肺上叶见一实性结节，大小约4.5 cm。左肺下叶小结节，约8 mm。建议随访。"
    doc = add_report(doc, Report("RPT_CT", text, title="CT chest findings"))
    a = text.index("右肺上叶")
    doc, _ = add_link(doc, "RPT_CT", a, text.index("。", a) + 1, "NODULE_A", "finding", actor="A01",
                      time="2026-01-01T00:30:00Z")
    b = text.index("左肺下叶")
    doc, _ = add_link(doc, "RPT_CT", b, text.index("。", b) + 1, "NODULE_B", "finding", actor="A01",
                      time="2026-01-01T00:31:00Z")
    c = text.index("建议")
    doc, _ = add_link(doc, "RPT_CT", c, len(text), "NODULE_B", "recommendation", actor="A01",
                      time="2026-01-01T00:32:00Z")
    doc, _results = check_links(doc, builtin_template("lung-ct"), masks)
    return doc, masks


def test_links_round_trip_document_json_document(linked: Any, tmp_path: Any) -> None:
    """Must show (R-8.4.2.5): links survive document -> JSON -> document exactly, under the schema;
    each link is mirrored in its target's cross_modal_links."""
    doc, _ = linked
    assert document_problems(doc.to_dict()) == []
    write_document(str(tmp_path / "doc.json"), doc)
    back = read_document(str(tmp_path / "doc.json"))
    assert back == doc and back.to_dict() == doc.to_dict()
    section = report_links_of(back)
    assert [(item.id, item.target, item.semantic_type) for item in section.links] == [
        ("TXT_SPAN_01", "NODULE_A", "finding"), ("TXT_SPAN_02", "NODULE_B", "finding"),
        ("TXT_SPAN_03", "NODULE_B", "recommendation")]
    first = section.links[0]
    assert section.reports[0].text[first.text.start:first.text.end] == first.text.quote
    assert first.text.level == "fragment" and first.text.sentence_index == 0  # "检查所见：" opens sentence 0
    assert section.links[1].text.level == "sentence" and section.links[1].text.sentence_index == 1
    mirror = back.annotation("NODULE_A").data["cross_modal_links"]
    assert mirror == [{"target": "TXT_SPAN_01", "kind": "text", "relation": "finding", "consistency": "inconsistent"}]


def test_inconsistent_link_raises_a_qc_finding(linked: Any) -> None:
    """R-8.4.2.4: the 4.5 cm statement about a 15 mm nodule is proposed inconsistent (a QC warning);
    once a person confirms it, it is a QC error; a person's decision survives later automatic checks."""
    doc, masks = linked
    findings = link_findings(doc)
    assert [(f["rule"], f["severity"], f["label"]) for f in findings] == [
        ("TEXT_LINK_CONSISTENCY", "warning", "NODULE_A")]
    assert "size" in findings[0]["message"]
    confirmed = confirm_consistency(doc, "TXT_SPAN_01", "inconsistent", "4.5 cm is the other lesion", "R01",
                                    time="2026-01-02T00:00:00Z")
    assert [f["severity"] for f in link_findings(confirmed)] == ["error"]
    rechecked, results = check_links(confirmed, builtin_template("lung-ct"), masks)
    assert report_links_of(rechecked).link("TXT_SPAN_01").consistency.source == "person"
    assert results[0].source == "person" and results[0].proposal.state == "inconsistent"
    with pytest.raises(InputError, match="needs a note"):
        confirm_consistency(doc, "TXT_SPAN_01", "inconsistent", " ", "R01")
    from QCMetricsLib.rules import check_document

    rules = [f.rule for f in check_document(confirmed.to_dict(), None, {}, [])]
    assert "TEXT_LINK_CONSISTENCY" in rules


def test_report_edit_reanchors_or_marks_stale(linked: Any) -> None:
    """R-8.4.2.3: an edit before the linked text moves the links (noted); deleting a linked sentence
    makes its link stale (offsets kept, consistency back to unchecked, a QC warning) - never a silent shift."""
    doc, _ = linked
    old = report_links_of(doc).reports[0].text
    new = "【CT】" + old
    moved, changes = update_report_text(doc, "RPT_CT", new)
    assert [c.state for c in changes] == ["moved"] * 3
    for item in report_links_of(moved).links:
        assert new[item.text.start:item.text.end] == item.text.quote
    assert document_problems(moved.to_dict()) == []
    cut = old.replace("左肺下叶小结节，约8 mm。", "")
    stale, changes = update_report_text(doc, "RPT_CT", cut)
    assert [c.state for c in changes] == ["anchored", "stale", "moved"]
    link = report_links_of(stale).link("TXT_SPAN_02")
    assert (link.text.start, link.text.end) == (report_links_of(doc).link("TXT_SPAN_02").text.start,
                                                report_links_of(doc).link("TXT_SPAN_02").text.end)
    assert link.consistency.state == "unchecked"
    assert document_problems(stale.to_dict()) == []
    assert "TEXT_LINK_ANCHOR" in [f["rule"] for f in link_findings(stale)]


def test_remove_link_removes_its_mirror(linked: Any) -> None:
    doc, _ = linked
    doc = remove_link(doc, "TXT_SPAN_01")
    assert "cross_modal_links" not in doc.annotation("NODULE_A").data
    assert document_problems(doc.to_dict()) == []


def _broken(doc: AnnotationDocument, change: Any) -> Dict[str, Any]:
    data = copy.deepcopy(doc.to_dict())
    change(data)
    return data


BROKEN = [
    ("quote differs", lambda d: d["report_links"]["links"][0]["text"].update(quote="别的文字"),
     r"text\.quote: the report holds"),
    ("target missing", lambda d: d["report_links"]["links"][0]["target"].update(annotation_id="NOPE"),
     r"target\.annotation_id: no annotation NOPE"),
    ("report missing", lambda d: d["report_links"]["links"][0]["text"].update(report_id="RPT_X"),
     r"text\.report_id: no report RPT_X"),
    ("text edited", lambda d: d["report_links"]["reports"][0].update(text="改了"), r"sha256"),
    ("duplicate link", lambda d: d["report_links"]["links"].append(copy.deepcopy(d["report_links"]["links"][0])),
     r"duplicate link id"),
    ("bad semantic type", lambda d: d["report_links"]["links"][0].update(semantic_type="guess"), r"semantic_type"),
    ("mirror missing", lambda d: next(a for a in d["annotations"] if a["id"] == "NODULE_A")["data"].pop(
        "cross_modal_links"), r"does not mirror link TXT_SPAN_01"),
    ("span beyond", lambda d: d["report_links"]["links"][0]["text"].update(end=10000), r"beyond the report"),
]


@pytest.mark.parametrize("name,change,match", BROKEN, ids=[b[0] for b in BROKEN])
def test_broken_links_rejected(linked: Any, name: str, change: Any, match: str) -> None:
    doc, _ = linked
    data = _broken(doc, change)
    with pytest.raises(DocumentError, match=match):
        document_from_dict(json.loads(json.dumps(data)))


def test_add_link_invalid_input(linked: Any) -> None:
    doc, _ = linked
    with pytest.raises(InputError, match="no report"):
        add_link(doc, "RPT_NONE", 0, 3, "NODULE_A", "finding")
    with pytest.raises(InputError, match="no annotation"):
        add_link(doc, "RPT_CT", 0, 3, "NOPE", "finding")
    with pytest.raises(InputError, match="not inside the text"):
        add_link(doc, "RPT_CT", 5, 3, "NODULE_A", "finding")
    with pytest.raises(InputError, match="is not one of"):
        add_link(doc, "RPT_CT", 0, 3, "NODULE_A", "opinion")
    with pytest.raises(InputError, match="already has a report"):
        add_report(doc, Report("RPT_CT", "x"))
    assert isinstance(doc.annotation("NODULE_A"), Annotation)


def _shape_document(modality: str, template_id: str, annotations: List[Dict[str, Any]],
                    g: ImageGeometry = GRID) -> AnnotationDocument:
    base = _document(template_id, modality, [], g).to_dict()
    base["annotations"] = annotations
    return document_from_dict(base)


def test_box_and_point_targets_in_patient_coordinates() -> None:
    """R-8.4.2.4 on a box (size between its longest side and diagonal) and a point (side only)."""
    template = builtin_template("lung-ct")
    doc = _shape_document("CT", "lung-ct", [
        {"id": "BOX", "category": "lesion", "label_code": "NODULE", "type": "bbox",
         "data": {"bbox": [10.0, 20.0, 24.0, 34.0], "slice_index": 5}},
        {"id": "PT", "category": "lesion", "label_code": "NODULE", "type": "point",
         "data": {"point": [70.0, 30.0, 4.0]}}])
    cases = [("BOX", "右侧结节约15 mm。", "consistent"), ("BOX", "右侧结节约4 cm。", "inconsistent"),
             ("PT", "Left lung nodule.", "consistent"), ("PT", "Right lung nodule.", "inconsistent")]
    for target, text, state in cases:
        d, link = _link(doc, text, target)
        assert check_link(d, link, template, {}).state == state, text


def test_ultrasound_side_from_the_lobe_attribute() -> None:
    """Without patient geometry (US) the side comes from the nodule's lobe attribute; the thyroid
    lobe named in the text is compared with it."""
    template = builtin_template("thyroid-us-tirads")
    g = ImageGeometry((80, 60, 1), (0.1, 0.1, 1.0))
    nodule = {"id": "N1", "category": "lesion", "label_code": "THYROID_NODULE", "type": "bbox",
              "data": {"bbox": [10.0, 10.0, 49.0, 39.0], "slice_index": 0, "attributes": {"lobe": "right"}}}
    doc = _shape_document("US", "thyroid-us-tirads", [nodule], g)
    for text, state, aspects in [("甲状腺右叶低回声结节，约4 mm。", "consistent", []),
                                 ("甲状腺左叶低回声结节，约4 mm。", "inconsistent", ["laterality", "location"]),
                                 ("Right thyroid lobe nodule, 2 cm.", "inconsistent", ["size"])]:
        d, link = _link(doc, text, "N1")
        proposal = check_link(d, link, template, {})
        assert proposal.state == state, (text, proposal.note)
        assert [c["aspect"] for c in proposal.checks if c["result"] == "inconsistent"] == aspects
