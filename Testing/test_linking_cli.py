"""``mmanno text split``, ``link check``, ``table import``/``export`` (R-8.4.2, R-8.4.3), and the
schemas of every JSON they read or write (versioned, every property documented)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, List

import jsonschema
import pytest

from MultiModalAnnotationLib.cli import main
from MultiModalAnnotationLib.consistency import check_links
from MultiModalAnnotationLib.links import add_link, add_report
from MultiModalAnnotationLib.package import export_package
from MultiModalAnnotationLib.reports_text import Report
from MultiModalAnnotationLib.schemas import schema_problems
from MultiModalAnnotationLib.templates import builtin_template
from RTSSBridgeLib.resources import schema_path

from .test_links import lung_case
from .test_samples import _walk_properties

NEW_SCHEMAS = ["report-links", "report-terms", "report-sentences", "link-check", "structured-fields",
               "structured-table", "structured-data"]


def _schema(name: str) -> Any:
    return json.loads(schema_path(name).read_text("utf-8"))


@pytest.mark.parametrize("name", NEW_SCHEMAS)
def test_schemas_versioned_and_documented(name: str) -> None:
    """STYLE habit 4: every JSON file of links and structured data has a versioned schema whose
    properties all carry a description and examples."""
    schema = _schema(name)
    assert schema["$id"] == f"https://multimodalannotation.github.io/schemas/{name}/v1"
    jsonschema.Draft202012Validator.check_schema(schema)
    missing: List[str] = []
    _walk_properties(schema, "", missing)
    assert missing == []


def test_text_split_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """R-8.4.2.3: a list of sentences with index, start, end (code points) and text."""
    text = "\ufeff右肺上叶见一结节，大小约1.5 cm。No effusion, e.g. none. 𠮷侧正常。"
    (tmp_path / "r.txt").write_bytes(text.encode("utf-8"))
    assert main(["text", "split", str(tmp_path / "r.txt"), "--json", str(tmp_path / "s.json")]) == 0
    data = json.loads((tmp_path / "s.json").read_text("utf-8"))
    assert schema_problems("report-sentences", data) == []
    body = text[1:]
    assert [s["text"] for s in data["sentences"]] == ["右肺上叶见一结节，大小约1.5 cm。", "No effusion, e.g. none.",
                                                      "𠮷侧正常。"]
    assert all(body[s["start"]:s["end"]] == s["text"] for s in data["sentences"])
    assert data["length"] == len(body)


@pytest.mark.parametrize("content,match", [(b"\xff\xfe\x00", "is not UTF-8"), (b"  \n", "is empty"),
                                           (None, "does not exist")])
def test_text_split_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str], content: Any, match: str) -> None:
    path = tmp_path / "r.txt"
    if content is not None:
        path.write_bytes(content)
    assert main(["text", "split", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and match in err[0] and str(path) in err[0]


def _package(tmp_path: Path, text: str) -> Path:
    doc, masks = lung_case()
    doc = add_report(doc, Report("RPT_CT", text))
    doc, _ = add_link(doc, "RPT_CT", 0, len(text), "NODULE_A", "finding", actor="A01", time="2026-01-01T00:00:00Z")
    return export_package(tmp_path / "pkg", doc, builtin_template("lung-ct"), masks=masks)


def test_link_check_package(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """R-8.4.2.4: link check on an export package proposes the mismatch, exits 1, writes the
    schema-valid JSON and (with --update) the checked document."""
    package = _package(tmp_path, "左肺上叶见一结节，大小约4.5 cm。")
    code = main(["link", "check", str(package), "--json", str(tmp_path / "c.json"),
                 "--update", str(tmp_path / "d.json")])
    assert code == 1
    data = json.loads((tmp_path / "c.json").read_text("utf-8"))
    assert schema_problems("link-check", data) == []
    assert data["counts"] == {"links": 1, "consistent": 0, "inconsistent": 1, "unchecked": 0, "stale": 0}
    aspects = [c["aspect"] for c in data["links"][0]["proposal"]["checks"] if c["result"] == "inconsistent"]
    assert aspects == ["size", "laterality", "location"]
    assert data["findings"][0]["rule"] == "TEXT_LINK_CONSISTENCY"
    updated = json.loads((tmp_path / "d.json").read_text("utf-8"))
    assert updated["report_links"]["links"][0]["consistency"]["state"] == "inconsistent"
    good = _package(tmp_path / "b", "右肺上叶见一结节，大小约1.5 cm。")
    assert main(["link", "check", str(good)]) == 0
    assert "1 consistent" in capsys.readouterr().out
    # a document with its mask files beside it (no manifest) is checked the same way
    assert main(["link", "check", str(good / "annotation.json"), "--json", str(tmp_path / "d2.json")]) == 0
    assert json.loads((tmp_path / "d2.json").read_text("utf-8"))["counts"]["consistent"] == 1


def test_link_check_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["link", "check", str(tmp_path / "nothing")]) == 2
    assert "nothing: no such file" in capsys.readouterr().err
    doc, masks = lung_case()
    package = export_package(tmp_path / "p", doc, builtin_template("lung-ct"), masks=masks)
    assert main(["link", "check", str(package)]) == 2
    assert "has no image-text links" in capsys.readouterr().err


def test_table_import_export_cli(sample_case: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """R-8.4.3 / R-004: import validates and writes the table JSON; export gives the same CSV bytes."""
    scores = Path(sample_case("xray-ra").root) / "ground_truth" / "scores.csv"
    assert main(["table", "import", str(scores), "--fields", "seed004-mtss", "--out", str(tmp_path / "t.json"),
                 "--json", str(tmp_path / "r.json")]) == 0
    table = json.loads((tmp_path / "t.json").read_text("utf-8"))
    assert schema_problems("structured-table", table) == []
    assert json.loads((tmp_path / "r.json").read_text("utf-8"))["records"] == 1
    assert main(["table", "export", str(tmp_path / "t.json"), "--out", str(tmp_path / "back.csv")]) == 0
    assert (tmp_path / "back.csv").read_bytes() == scores.read_bytes()
    assert main(["table", "export", str(tmp_path / "t.json"), "--out", str(tmp_path / "back.xlsx")]) == 0
    assert main(["table", "import", str(tmp_path / "back.xlsx"), "--fields", "seed004-mtss", "--out",
                 str(tmp_path / "t2.json")]) == 0
    again = json.loads((tmp_path / "t2.json").read_text("utf-8"))
    assert again["records"] == table["records"]


def test_table_import_invalid_value_names_row_and_column(sample_case: Any, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    scores = Path(sample_case("xray-ra").root) / "ground_truth" / "scores.csv"
    lines = scores.read_text("utf-8").splitlines()
    cells = lines[1].split(",")
    cells[9] = "7"  # erosion_RH_MCP2: 0-5
    (tmp_path / "bad.csv").write_text("\n".join([lines[0], ",".join(cells)]) + "\n", "utf-8")
    assert main(["table", "import", str(tmp_path / "bad.csv"), "--fields", "seed004-mtss", "--out",
                 str(tmp_path / "t.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "row 2, column J (erosion_RH_MCP2): 7 is above the maximum 5" in err[0]
    assert not (tmp_path / "t.json").exists()
    assert main(["table", "import", str(scores), "--fields", "nope", "--out", str(tmp_path / "t.json")]) == 2
    assert "no built-in field definitions" in capsys.readouterr().err


def test_table_export_from_document_needs_a_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc, _ = lung_case()
    from RTSSBridgeLib.fileio import write_json_atomic

    write_json_atomic(tmp_path / "doc.json", doc.to_dict())
    assert main(["table", "export", str(tmp_path / "doc.json"), "--out", str(tmp_path / "x.csv")]) == 2
    assert "holds 0 tables" in capsys.readouterr().err


def test_check_links_is_idempotent() -> None:
    doc, masks = lung_case()
    doc = add_report(doc, Report("R", "右肺上叶结节，约1.5 cm。"))
    doc, _ = add_link(doc, "R", 0, 14, "NODULE_A", "finding", time="2026-01-01T00:00:00Z")
    once, _ = check_links(doc, builtin_template("lung-ct"), masks)
    twice, _ = check_links(once, builtin_template("lung-ct"), masks)
    assert once == twice


@pytest.mark.parametrize("days,tagged", [(89, 0), (90, 0), (91, 1)])
def test_table_bind_cli_time_deviation(tmp_path: Path, capsys: pytest.CaptureFixture[str], days: int,
                                       tagged: int) -> None:
    """R-8.4.3.5 through the command line: the task's threshold (90 days) decides the tag."""
    import datetime as dt

    from RTSSBridgeLib.fileio import write_json_atomic

    doc, _ = lung_case()
    write_json_atomic(tmp_path / "doc.json", doc.to_dict())
    (tmp_path / "f.csv").write_text("ID,Gender,age,Smoke,statue_death,survival\nP1,F,61,never,0,12.5\n", "utf-8")
    defs = {"schema": "https://multimodalannotation.github.io/schemas/structured-fields/v1", "id": "lab",
            "version": "1", "title": "lab", "fields": [
                {"name": "ID", "type": "string", "key": "case_id", "identifying": True},
                {"name": "Date", "type": "date", "time_attribute": "exam_time"},
                {"name": "CEA", "type": "number", "unit": "ng/mL", "normal_range": [0, 5]}]}
    write_json_atomic(tmp_path / "defs.json", defs)
    (tmp_path / "lab.csv").write_text("ID,Date,CEA\nP1,2024-01-01,7.5\nP2,2024-01-01,1\n", "utf-8")
    assert main(["table", "import", str(tmp_path / "lab.csv"), "--fields", str(tmp_path / "defs.json"), "--out",
                 str(tmp_path / "t.json")]) == 0
    image_date = (dt.date(2024, 1, 1) + dt.timedelta(days=days)).isoformat()
    task = Path(__file__).resolve().parents[1] / "Resources" / "tasks" / "thyroid-us-tirads-appendix-a.json"
    assert main(["table", "bind", str(tmp_path / "t.json"), str(tmp_path / "doc.json"), "--case-id", "P1",
                 "--image-date", image_date, "--task", str(task), "--out", str(tmp_path / "bound.json"),
                 "--json", str(tmp_path / "r.json")]) == 0
    result = json.loads((tmp_path / "r.json").read_text("utf-8"))
    assert result["case_records"] == 1 and len(result["time_deviation_tagged"]) == tagged
    bound = json.loads((tmp_path / "bound.json").read_text("utf-8"))
    record = bound["structured_data"]["tables"][0]["records"][0]
    assert record["time_deviation"]["days"] == days and record["flags"] == {"CEA": "high"}
    assert main(["table", "bind", str(tmp_path / "t.json"), str(tmp_path / "doc.json"), "--case-id", "P9",
                 "--out", str(tmp_path / "x.json")]) == 2
    assert "no record of lab belongs to case P9" in capsys.readouterr().err
