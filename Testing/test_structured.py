"""Image-structured data (R-8.4.3): field definitions, CSV/XLSX import with row+column errors,
binding by keys, time-deviation tag, and the seed 001 / seed 004 tables (R-001, R-004)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any, Dict, List, Tuple

import numpy as np
import pytest

from MultiModalAnnotationLib.documents import (
    AnnotationDocument,
    document_from_dict,
    document_problems,
    validate_document,
)
from MultiModalAnnotationLib.sample_documents import document_from_sample
from MultiModalAnnotationLib.seed_tables import (
    CLINICAL,
    MTSS,
    export_seed001_clinical,
    export_seed004_scores,
    ijk_to_position,
    import_seed001_clinical,
    import_seed004_scores,
    lps_to_position,
    position_to_lps,
)
from MultiModalAnnotationLib.structured import (
    CaseKeys,
    FieldDefinitions,
    ImageKey,
    TableError,
    add_table,
    builtin_field_definitions,
    read_table,
    read_table_json,
    table_from_document,
    time_deviation,
    write_table,
)
from MultiModalAnnotationLib.templates import builtin_template
from RTSSBridgeLib.errors import InputError
from RTSSBridgeLib.geometry import ImageGeometry

OBLIQUE = ImageGeometry((64, 48, 30), (0.7, 0.8, 2.5), (-120.0, 35.5, -310.25),
                        ((0.9781476, 0.0, 0.2079117), (0.0, 1.0, 0.0), (-0.2079117, 0.0, 0.9781476)))


def _csv(header: List[str], rows: List[List[Any]], terminator: str = "\n") -> str:
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator=terminator)
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


# --------------------------------------------------------------------------- seed 001
def _clinical_csv(nodules: List[Dict[str, Any]], case_id: str) -> str:
    """A seed 001 clinical table of the sample's nodules plus another patient's row (binding must skip it)."""
    header = ["Order", "分类", "病理分型", "ID", "X", "Y", "Z", "TNM分期", "临床分期"]
    rows = []
    for n, nod in enumerate(nodules, start=1):
        tnm = nod["tnm_text"] or ""
        rows.append([n, "恶性" if nod["classification"] == "malignant" else "良性", nod["pathology_type_zh"], case_id,
                     nod["x"], nod["y"], nod["z"], tnm, nod["clinical_stage"] or ""])
    rows.append([1, "恶性", "腺癌", "OTHER0001", 100, 200, 3, "T1bN0M0", "IA2"])
    return _csv(header, rows, "\r\n")


@pytest.fixture(scope="module")
def ct_case(sample_case: Any) -> Tuple[Path, AnnotationDocument, Dict[str, Any]]:
    root = Path(sample_case("ct-chest", slices=40).root)
    document, _masks, _template = document_from_sample(root)
    nodules = json.loads((root / "ground_truth" / "nodules.json").read_text("utf-8"))["nodules"]
    follow = json.loads((root / "ground_truth" / "follow_up.json").read_text("utf-8"))
    nodules = [n for n in nodules if 1 <= n["z"] <= document.image.geometry.shape[2]]
    return root, document.replace(annotations=[]), {"nodules": nodules, "follow_up": follow}


def test_seed001_clinical_table_round_trips_exactly(ct_case: Any, tmp_path: Path) -> None:
    """Must show (R-001, R-8.4.3): the seed 001 clinical table imports, binds the case's rows to point
    annotations at (X, Y, Z-1) and exports back byte for byte; the other patient's row is not bound."""
    _root, document, truth = ct_case
    case_id = truth["follow_up"]["ID"]
    source = tmp_path / "clinical.csv"
    source.write_bytes(_clinical_csv(truth["nodules"], case_id).encode("utf-8"))
    table = read_table(str(source), builtin_field_definitions(CLINICAL))
    keys = CaseKeys(case_id, (ImageKey(document.image.uid, "", "2024-01-10"),))
    template = builtin_template("lung-ct")
    doc = import_seed001_clinical(document, table, keys, template)
    assert document_problems(doc.to_dict()) == []
    assert validate_document(doc, template) == []
    points = [a for a in doc.annotations if a.type == "point"]
    assert len(points) == len(truth["nodules"]) >= 1
    g = doc.image.geometry
    for a, nod in zip(points, truth["nodules"]):
        assert a.data["point"] == [float(nod["x"]), float(nod["y"]), float(nod["z"] - 1)]
        lps = position_to_lps(nod["x"], nod["y"], nod["z"], g)
        assert np.allclose(lps, g.ijk_to_lps([nod["x"], nod["y"], nod["k"]]), atol=1e-9)
        assert lps_to_position(lps, g) == (nod["x"], nod["y"], nod["z"])
        assert a.attributes["malignancy"] == nod["classification"]
        assert a.attributes["pathology_type"] == nod["pathology_type"]
    again = document_from_dict(json.loads(json.dumps(doc.to_dict())))
    assert again == doc
    out = tmp_path / "back.csv"
    write_table(str(out), export_seed001_clinical(again))
    expected = _clinical_csv(truth["nodules"], case_id).encode("utf-8")
    expected = b"\r\n".join(expected.split(b"\r\n")[:-2]) + b"\r\n"  # without the other patient's row
    assert out.read_bytes() == expected


def test_seed001_moved_point_is_exported_with_its_new_pixel(ct_case: Any, tmp_path: Path) -> None:
    """The export reads X/Y/Z from the point annotation: an annotator's move reaches the table;
    a point between pixel centres is refused rather than silently rounded."""
    _root, document, truth = ct_case
    case_id = truth["follow_up"]["ID"]
    source = tmp_path / "clinical.csv"
    source.write_bytes(_clinical_csv(truth["nodules"], case_id).encode("utf-8"))
    table = read_table(str(source), builtin_field_definitions(CLINICAL))
    doc = import_seed001_clinical(document, table, CaseKeys(case_id), builtin_template("lung-ct"))
    point = next(a for a in doc.annotations if a.type == "point")
    moved = point.with_data(point=[point.data["point"][0] + 3, point.data["point"][1], point.data["point"][2]])
    doc2 = doc.replace(annotations=[moved if a.id == point.id else a for a in doc.annotations])
    exported = export_seed001_clinical(doc2)
    assert exported.records[0].values["X"] == truth["nodules"][0]["x"] + 3
    half = point.with_data(point=[point.data["point"][0] + 0.5, point.data["point"][1], point.data["point"][2]])
    doc3 = doc.replace(annotations=[half if a.id == point.id else a for a in doc.annotations])
    with pytest.raises(InputError, match="not on a pixel centre"):
        export_seed001_clinical(doc3)


def test_seed001_positions_exact_on_oblique_anisotropic_grid() -> None:
    """R-001 x/y/z <-> physical points, exact both ways on an oblique, anisotropic, non-origin grid."""
    rng = np.random.default_rng(1)
    for _ in range(300):
        x, y, z = int(rng.integers(0, 64)), int(rng.integers(0, 48)), int(rng.integers(1, 31))
        lps = position_to_lps(x, y, z, OBLIQUE)
        assert np.allclose(lps, OBLIQUE.ijk_to_lps([x, y, z - 1]), atol=0)
        assert lps_to_position(lps, OBLIQUE) == (x, y, z)
    # the seed's example pixel: x=110 right, y=254 down from the top-left, slice 131
    big = ImageGeometry((512, 512, 200), (0.7, 0.7, 1.25), (-180.0, -180.0, -300.0))
    assert np.allclose(position_to_lps(110, 254, 131, big), [-180 + 110 * 0.7, -180 + 254 * 0.7, -300 + 130 * 1.25])
    with pytest.raises(InputError, match="outside the image"):
        position_to_lps(64, 0, 1, OBLIQUE)
    with pytest.raises(InputError, match="outside the image"):
        position_to_lps(0, 0, 0, OBLIQUE)
    with pytest.raises(InputError, match="not on a pixel centre"):
        ijk_to_position([1.2, 3.0, 4.0])


def test_seed001_position_outside_image_names_row_and_columns(ct_case: Any, tmp_path: Path) -> None:
    _root, document, truth = ct_case
    case_id = truth["follow_up"]["ID"]
    text = _csv(["Order", "分类", "ID", "X", "Y", "Z"], [[1, "良性", case_id, 10, 20, 999]])
    (tmp_path / "c.csv").write_text(text, "utf-8")
    table = read_table(str(tmp_path / "c.csv"), builtin_field_definitions(CLINICAL))
    with pytest.raises(InputError, match=r"row 2, columns D-F \(X, Y, Z\): position .* outside the image"):
        import_seed001_clinical(document, table, CaseKeys(case_id), builtin_template("lung-ct"))


@pytest.mark.parametrize("suffix", [".csv", ".xlsx"])
def test_seed001_follow_up_round_trips_csv_and_xlsx(ct_case: Any, tmp_path: Path, suffix: str) -> None:
    """R-001 follow-up table (Gender, age, Smoke, statue_death, survival, recurrence): import ->
    document -> export gives the same values (CSV: the same bytes)."""
    _root, document, truth = ct_case
    f = truth["follow_up"]
    header = ["ID", "Gender", "age", "Smoke", "statue_death", "survival", "recurrence"]
    rows = [[f["ID"], f["Gender"], f["Age"], f["Smoke"], f["status_death"], f["survival_months"], f["recurrence"]],
            ["OTHER0001", "F", 58, "never", 0, 84.0, 0]]
    source = tmp_path / "follow.csv"
    source.write_text(_csv(header, rows), "utf-8")
    if suffix == ".xlsx":
        import openpyxl

        book = openpyxl.Workbook()
        book.active.append(header)
        for row in rows:
            book.active.append(row)
        source = tmp_path / "follow.xlsx"
        book.save(str(source))
    fields = builtin_field_definitions("seed001-follow-up")
    table = read_table(str(source), fields)
    doc = add_table(document, table, CaseKeys(f["ID"]))
    assert document_problems(doc.to_dict()) == []
    back = table_from_document(document_from_dict(json.loads(json.dumps(doc.to_dict()))), table.id)
    assert [r.values for r in back.records] == [table.records[0].values]
    out = tmp_path / f"out{suffix}"
    write_table(str(out), back)
    again = read_table(str(out), fields)
    assert [r.values for r in again.records] == [table.records[0].values]
    if suffix == ".csv":
        assert out.read_text("utf-8") == _csv(header, rows[:1])


# --------------------------------------------------------------------------- seed 004
@pytest.fixture(scope="module")
def ra_case(sample_case: Any) -> Tuple[Path, AnnotationDocument, Dict[str, Any]]:
    root = Path(sample_case("xray-ra").root)
    document, _masks, _template = document_from_sample(root)
    manifest = json.loads((root / "case.json").read_text("utf-8"))
    return root, document.replace(annotations=[]), manifest


def _ra_keys(manifest: Dict[str, Any], case_id: str, hand_date: str = "") -> CaseKeys:
    studies = {s["accession_number"][:3]: s for s in manifest["studies"]}
    series = {s["key"]: s for s in manifest["series"]}

    def iso(d: str) -> str:
        return f"{d[:4]}-{d[4:6]}-{d[6:]}"

    return CaseKeys(case_id, (
        ImageKey(series["CR_HAND"]["series_instance_uid"], studies["RAH"]["accession_number"],
                 hand_date or iso(studies["RAH"]["date"])),
        ImageKey(series["CR_FOOT"]["series_instance_uid"], studies["RAF"]["accession_number"],
                 iso(studies["RAF"]["date"]))))


def test_seed004_score_sheet_round_trips_exactly(ra_case: Any, tmp_path: Path) -> None:
    """Must show (R-004): the sample's score sheet -> attribute annotations of the RA template (equal
    to the joints' ground truth) -> export: the same bytes; XLSX the same values."""
    root, document, manifest = ra_case
    source = root / "ground_truth" / "scores.csv"
    fields = builtin_field_definitions(MTSS)
    table = read_table(str(source), fields)
    case_id = table.records[0].values["NO."]
    template = builtin_template("ra-hand-foot-mtss")
    doc = import_seed004_scores(document, table, _ra_keys(manifest, case_id), template)
    assert document_problems(doc.to_dict()) == []
    assert validate_document(doc, template) == []
    joints = json.loads((root / "ground_truth" / "joints.json").read_text("utf-8"))["joints"]
    by_id = {a.id: a for a in doc.annotations}
    for joint in joints:
        attributes = by_id[f"{joint['code']}_SCORE"].attributes
        assert attributes.get("erosion") == joint["erosion"] and attributes.get("jsn") == joint["jsn"]
    case = by_id["MTSS_CASE"].attributes
    assert case["total_mtss"] == case["total_erosion"] + case["total_jsn"]
    again = document_from_dict(json.loads(json.dumps(doc.to_dict())))
    out = tmp_path / "scores.csv"
    write_table(str(out), export_seed004_scores(again))
    assert out.read_bytes() == source.read_bytes()
    xlsx = tmp_path / "scores.xlsx"
    write_table(str(xlsx), export_seed004_scores(again))
    assert [r.values for r in read_table(str(xlsx), fields).records] == [r.values for r in table.records]


def test_seed004_changed_score_reaches_the_sheet(ra_case: Any) -> None:
    root, document, manifest = ra_case
    table = read_table(str(root / "ground_truth" / "scores.csv"), builtin_field_definitions(MTSS))
    doc = import_seed004_scores(document, table, _ra_keys(manifest, table.records[0].values["NO."]),
                                builtin_template("ra-hand-foot-mtss"))
    joint = doc.annotation("RH_MCP2_SCORE")
    changed = joint.with_data(attributes={**joint.attributes, "erosion": 5})
    doc = doc.replace(annotations=[changed if a.id == joint.id else a for a in doc.annotations])
    assert export_seed004_scores(doc).records[0].values["erosion_RH_MCP2"] == 5
    from MultiModalAnnotationLib.documents import Annotation

    point = Annotation("JOINT_RH_MCP2", "landmark", "RH_MCP2", "point",
                       {"point": [10.0, 10.0, 0.0], "attributes": {"erosion": 1}})
    with pytest.raises(InputError, match="RH_MCP2 erosion: RH_MCP2_SCORE says 5, JOINT_RH_MCP2 says 1"):
        export_seed004_scores(doc.replace(annotations=[*doc.annotations, point]))


def test_seed004_binding_by_accession_number(ra_case: Any) -> None:
    """Hand and foot exams are bound to the case by accession number (R-004): a case whose images
    carry other accession numbers gets no record."""
    root, document, manifest = ra_case
    table = read_table(str(root / "ground_truth" / "scores.csv"), builtin_field_definitions(MTSS))
    case_id = table.records[0].values["NO."]
    keys = _ra_keys(manifest, case_id)
    wrong = CaseKeys(case_id, tuple(ImageKey(i.uid, "RAX99999", i.date) for i in keys.images))
    with pytest.raises(InputError, match="no record of seed004-mtss belongs to case"):
        import_seed004_scores(document, table, wrong, builtin_template("ra-hand-foot-mtss"))


# --------------------------------------------------------------------------- time deviation
@pytest.mark.parametrize("days,tag", [(89, False), (90, False), (91, True)])
def test_time_deviation_tag_exact_at_89_90_91_days(ra_case: Any, days: int, tag: bool) -> None:
    """Must show (R-8.4.3.5): the tag is set when image and exam dates are MORE than 90 days apart:
    89 and 90 days are not tagged, 91 days is; the QC finding follows the tag."""
    import datetime as dt

    from MultiModalAnnotationLib.links import link_findings

    root, document, manifest = ra_case
    table = read_table(str(root / "ground_truth" / "scores.csv"), builtin_field_definitions(MTSS))
    exam = dt.date.fromisoformat(table.records[0].values["Exam_date_H"])
    image_date = (exam + dt.timedelta(days=days)).isoformat()
    keys = _ra_keys(manifest, table.records[0].values["NO."], hand_date=image_date)
    doc = import_seed004_scores(document, table, keys, builtin_template("ra-hand-foot-mtss"))
    record = doc.structured_data["tables"][0]["records"][0]  # type: ignore[index]
    assert record["time_deviation"] == {"exam_date": exam.isoformat(), "image_date": image_date, "days": days,
                                        "threshold_days": 90, "tag": tag, "field": "Exam_date_H"}
    assert document_problems(doc.to_dict()) == []
    findings = [f for f in link_findings(doc) if f["rule"] == "TIME_DEVIATION"]
    assert len(findings) == (1 if tag else 0)
    assert time_deviation("2024-01-01", "2023-10-03")["days"] == 90


def test_forged_time_deviation_tag_is_a_document_problem(ra_case: Any) -> None:
    root, document, manifest = ra_case
    table = read_table(str(root / "ground_truth" / "scores.csv"), builtin_field_definitions(MTSS))
    doc = import_seed004_scores(document, table, _ra_keys(manifest, table.records[0].values["NO."]),
                                builtin_template("ra-hand-foot-mtss"))
    data = doc.to_dict()
    data["structured_data"]["tables"][0]["records"][0]["time_deviation"]["tag"] = True
    assert any("time_deviation" in p and "rule: tag when more than" in p for p in document_problems(data))


# --------------------------------------------------------------------------- invalid input
FIELDS = FieldDefinitions.from_dict({
    "schema": "https://multimodalannotation.github.io/schemas/structured-fields/v1", "id": "lab", "version": "1",
    "title": "lab", "fields": [
        {"name": "ID", "type": "string", "key": "case_id", "identifying": True},
        {"name": "Glucose", "type": "number", "unit": "mmol/L", "normal_range": [3.9, 6.1], "minimum": 0},
        {"name": "Grade", "type": "integer", "allowed_values": [1, 2, 3]},
        {"name": "Date", "type": "date", "format": "yyyyMMdd", "time_attribute": "exam_time"},
        {"name": "Note", "type": "string", "required": False}]})
HEADER = ["ID", "Glucose", "Grade", "Date", "Note"]


@pytest.mark.parametrize("row,match", [
    (["P1", "abc", 1, "20240101", ""], r"row 3, column B \(Glucose\): 'abc' is not a number"),
    (["P1", "5.0", 7, "20240101", ""], r"row 3, column C \(Grade\): 7 is not one of the allowed values \(1, 2, 3\)"),
    (["P1", "5.0", "2.5", "20240101", ""], r"row 3, column C \(Grade\): '2.5' is not an integer"),
    (["P1", "-1", 1, "20240101", ""], r"row 3, column B \(Glucose\): -1 is below the minimum 0"),
    (["P1", "5.0", 1, "2024-01-01", ""], r"row 3, column D \(Date\): '2024-01-01' is not a date in the format "
                                         r"yyyyMMdd"),
    (["P1", "5.0", 1, "20240230", ""], r"row 3, column D \(Date\): '20240230' is not a date"),
    (["P1", "", 1, "20240101", ""], r"row 3, column B \(Glucose\): is empty; rule: required"),
    (["", "5.0", 1, "20240101", ""], r"row 3, column A \(ID\): is empty"),
    (["P1", "nan", 1, "20240101", ""], r"row 3, column B \(Glucose\): 'nan' is not a number"),
])
def test_invalid_value_rejected_with_row_and_column(tmp_path: Path, row: List[Any], match: str) -> None:
    """Must show (R-8.4.3): an invalid value is rejected naming its row and column."""
    path = tmp_path / "lab.csv"
    path.write_text(_csv(HEADER, [["P0", "5.5", 2, "20240101", "ok"], row]), "utf-8")
    with pytest.raises(TableError, match=match) as info:
        read_table(str(path), FIELDS)
    assert str(path) in str(info.value)


def test_invalid_xlsx_cell_rejected_with_row_and_column(tmp_path: Path) -> None:
    import openpyxl

    book = openpyxl.Workbook()
    book.active.append(HEADER)
    book.active.append(["P0", 5.5, 2, "20240101", None])
    book.active.append(["P1", 5.5, 2.5, "20240101", None])
    book.save(str(tmp_path / "lab.xlsx"))
    with pytest.raises(TableError, match=r"row 3, column C \(Grade\): 2.5 is not an integer"):
        read_table(str(tmp_path / "lab.xlsx"), FIELDS)


def test_identifying_value_never_echoed(tmp_path: Path) -> None:
    """R-5.1: an invalid identifying value is reported without the value."""
    fields = FieldDefinitions.from_dict({**FIELDS.to_dict(), "fields": [
        {"name": "ID", "type": "string", "key": "case_id", "identifying": True, "pattern": "^P[0-9]+$"}]})
    (tmp_path / "t.csv").write_text("ID\nZHANG SAN 110101199001011234\n", "utf-8")
    with pytest.raises(TableError, match=r"row 2, column A \(ID\): \(value withheld: identifying field\)") as info:
        read_table(str(tmp_path / "t.csv"), fields)
    assert "ZHANG" not in str(info.value)


@pytest.mark.parametrize("text,match", [
    ("ID,Glucose,Grade,Date,Extra\nP1,5,1,20240101,x\n", r"row 1, column E \(Extra\): no field definition"),
    ("ID,Glucose,Date\nP1,5,20240101\n", r"row 1: required column Grade is missing"),
    ("ID,Glucose,Glucose,Grade,Date\n", r"row 1, column C \(Glucose\): duplicate column name"),
    ("", r"row 1: the table is empty"),
    ("ID,Glucose,Grade,Date\nP1,5,1,20240101,surplus\n", r"row 2, column E: 1 value\(s\) beyond the last"),
])
def test_malformed_tables(tmp_path: Path, text: str, match: str) -> None:
    (tmp_path / "t.csv").write_text(text, "utf-8")
    with pytest.raises(TableError, match=match):
        read_table(str(tmp_path / "t.csv"), FIELDS)


def test_unreadable_files(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_bytes(b"ID\n\xff\xfe\n")
    with pytest.raises(InputError, match="is not UTF-8"):
        read_table(str(tmp_path / "t.csv"), FIELDS)
    (tmp_path / "t.xlsx").write_bytes(b"not a zip")
    with pytest.raises(InputError, match="is not a readable XLSX"):
        read_table(str(tmp_path / "t.xlsx"), FIELDS)
    (tmp_path / "t.txt").write_text("x", "utf-8")
    with pytest.raises(InputError, match=r"a table is \.csv or \.xlsx"):
        read_table(str(tmp_path / "t.txt"), FIELDS)


def test_normal_range_flags_and_duplicate_keys(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text(_csv(HEADER, [["P1", "7.2", 1, "20240101", ""], ["P1", "3.0", 2, "20240102", ""],
                                                  ["P1", "5", 2, "20240102", ""]]), "utf-8")
    table = read_table(str(tmp_path / "t.csv"), FIELDS)
    assert [dict(r.flags) for r in table.records] == [{"Glucose": "high"}, {"Glucose": "low"}, {}]
    assert table.records[2].values["Glucose"] == 5 and isinstance(table.records[2].values["Glucose"], int)
    from MultiModalAnnotationLib.structured import bind_table

    with pytest.raises(InputError, match=r"rows 3 and 4 have the same keys \(ID, Date\)"):
        bind_table(table, CaseKeys("P1"))
    two = table.__class__(table.id, table.fields, table.columns, table.records[:2], table.source)
    assert len(bind_table(two, CaseKeys("P1"))) == 2  # one case, two exam dates: two records


def test_invalid_field_definitions() -> None:
    base = FIELDS.to_dict()
    with pytest.raises(InputError, match="'colour' is not one of"):
        FieldDefinitions.from_dict({**base, "fields": [{"name": "a", "type": "colour"}]})
    with pytest.raises(InputError, match="field a is defined twice"):
        FieldDefinitions.from_dict({**base, "fields": [{"name": "a", "type": "string"}] * 2})
    with pytest.raises(InputError, match="an exam_time field is a date"):
        FieldDefinitions.from_dict({**base, "fields": [{"name": "a", "type": "string", "time_attribute": "exam_time"}]})


def test_table_json_round_trip(tmp_path: Path) -> None:
    from RTSSBridgeLib.fileio import write_json_atomic

    (tmp_path / "t.csv").write_text(_csv(HEADER, [["P1", "7.25", 1, "20240101", "x"]]), "utf-8")
    table = read_table(str(tmp_path / "t.csv"), FIELDS)
    write_json_atomic(tmp_path / "t.json", table.to_dict())
    assert read_table_json(str(tmp_path / "t.json")) == table
    data = table.to_dict()
    data["records"][0]["values"]["Grade"] = 9
    write_json_atomic(tmp_path / "bad.json", data)
    with pytest.raises(TableError, match=r"row 2, column C \(Grade\): 9 is not one of the allowed values"):
        read_table_json(str(tmp_path / "bad.json"))


def test_builtin_field_definitions_match_the_sample_sheet(sample_case: Any) -> None:
    """The seed 004 definitions cover exactly the sample score sheet's columns (94: 8 + 44 erosion + 42 JSN)."""
    root = Path(sample_case("xray-ra").root)
    header = (root / "ground_truth" / "scores.csv").read_text("utf-8").splitlines()[0].split(",")
    assert [f.name for f in builtin_field_definitions(MTSS).fields] == header
    with pytest.raises(InputError, match="no built-in field definitions 'nope'"):
        builtin_field_definitions("nope")
