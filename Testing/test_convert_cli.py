"""``mmanno rtss import|export`` and ``mmanno seg import|export`` (R-5.7, R-6.11, R-6.3).

Import writes a labelmap, optional per-ROI files and a JSON sidecar (schema roi-conversion v1)
with every ROI and warning; export takes a labelmap + template or per-ROI masks. Bad input: one
line on stderr naming file, field and rule, exit status 2.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, List, Tuple

import nibabel as nib
import numpy as np
import pydicom
import pytest

from MultiModalAnnotationLib.cli import main
from RTSSBridgeLib import cliutil
from RTSSBridgeLib.errors import InputError
from RTSSBridgeLib.labels import LabelInfo, LabelSet, NameRule
from RTSSBridgeLib.structures import read_report

from .rtss_cases import TESTDATA


def run(args: List[str], capsys: pytest.CaptureFixture[str]) -> Tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def brain_template(_path: str) -> LabelSet:
    return LabelSet.from_labels(
        [LabelInfo("SKULL", "Skull", 2, (241, 214, 145), rt_interpreted_type="ORGAN"),
         LabelInfo("METASTASIS", "Brain metastasis", 10, (255, 0, 0), rt_interpreted_type="GTV")],
        template_id="brain-mets", version="1.0",
        name_rules=[NameRule("[*]skull", "SKULL", "glob"), NameRule(r"[LR]_.+", "METASTASIS", "regex")])


@pytest.fixture
def template(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """A --template file read by a test loader (the real loader belongs to MultiModalAnnotation)."""
    monkeypatch.setattr(cliutil, "label_set_loader", brain_template)
    path = tmp_path / "brain.template.json"
    path.write_text("{}")
    return str(path)


@pytest.fixture(scope="module")
def case(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from RTSSBridgeLib.samples import write_sample

    return write_sample("mr-brain-mets", tmp_path_factory.mktemp("convert-cli") / "mr", seed=2, slices=30)


def structure_set(case: Any) -> Tuple[Path, dict]:
    manifest = json.loads(case.manifest.read_text())
    entry = manifest["structure_sets"][0]
    return case.root / entry["dir"] / entry["file"], entry


def test_rtss_import_writes_labelmap_split_and_sidecar(case: Any, template: str, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """The sample's RTSS (seed 002 names, referencing T1W+C among three MR series) through the
    template: lesions get METASTASIS's value 10, *Skull SKULL's 2; the sidecar lists every ROI."""
    rtss, entry = structure_set(case)
    out = tmp_path / "labels.nii.gz"
    code, stdout, err = run(["rtss", "import", str(rtss), "--series", str(case.root / "dicom"), "--out", str(out),
                             "--split", str(tmp_path / "split"), "--template", template, "--quiet"], capsys)
    assert code == 0, err
    sidecar = read_report(str(tmp_path / "labels.json"))
    assert sidecar["operation"] == "import" and sidecar["source"]["kind"] == "RTSTRUCT"
    assert sidecar["reference_series"]["series_instance_uid"] == entry["referenced_series_instance_uid"]
    assert [r["name"] for r in sidecar["rois"]] == [r["roi_name"] for r in entry["rois"]]
    assert [r["voxel_count"] for r in sidecar["rois"]] == [r["n_voxels"] for r in entry["rois"]]
    assert {r["label_code"] for r in sidecar["rois"][:-1]} == {"METASTASIS"} and sidecar["rois"][-1]["label_value"] == 2
    assert sidecar["template"] == {"template_id": "brain-mets", "version": "1.0"}
    labels = np.asarray(nib.load(str(out)).dataobj)
    assert sorted(np.unique(labels).tolist()) == [0, 2, 10]
    # file names are the ROI names, with characters file systems refuse replaced ('*Skull' -> '_Skull')
    assert sorted(p.name for p in (tmp_path / "split").iterdir()) == sorted(
        f"{r['roi_name'].replace('*', '_')}.nii.gz" for r in entry["rois"])
    assert [w["code"] for w in sidecar["rois"][-1]["warnings"]] == ["RENAMED_FILE"]
    assert "imported" in stdout and "-> METASTASIS" in stdout
    identity = json.loads(case.manifest.read_text())["identifying_values"]
    text = (tmp_path / "labels.json").read_text()
    assert identity["PatientID"] not in text and identity["PatientName"].split("=")[0] not in text


def test_rtss_import_json_to_stdout_equals_the_sidecar(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, stdout, err = run(["rtss", "import", str(TESTDATA / "dicompyler_core" / "rtss.dcm"), "--series",
                             str(TESTDATA / "dicompyler_core"), "--out", str(tmp_path / "l.nii"), "--json",
                             "--quiet"], capsys)
    assert code == 0, err
    document = json.loads(stdout)
    assert document == json.loads((tmp_path / "l.json").read_text())
    areola = next(r for r in document["rois"] if r["name"] == "Areola")
    assert [w["code"] for w in areola["warnings"]] == ["EMPTY_ROI"]
    assert document["n_warnings"] >= 10 and document["n_errors"] == 0


def test_rtss_export_from_split_masks_and_from_labelmap_with_template(case: Any, template: str, tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    rtss, entry = structure_set(case)
    series_uid = entry["referenced_series_instance_uid"]
    run(["rtss", "import", str(rtss), "--series", str(case.root / "dicom"), "--out", str(tmp_path / "l.nii.gz"),
         "--split", str(tmp_path / "split"), "--quiet"], capsys)
    masks = sorted(str(p) for p in (tmp_path / "split").iterdir())
    code, _out, err = run(["rtss", "export", *masks, "--series", str(case.root / "dicom"), "--out",
                           str(tmp_path / "a.dcm"), "--quiet"], capsys)
    # T1W and T1W+C share the grid: the user must say which series the structure set refers to
    assert code == 2 and "holds 2 image series that fit" in err and "--series-uid" in err
    code, out, err = run(["rtss", "export", *masks, "--series", str(case.root / "dicom"), "--series-uid", series_uid,
                          "--out", str(tmp_path / "a.dcm"), "--label", "ROIs in axC", "--json", "--quiet"], capsys)
    assert code == 0, err
    document = json.loads(out)
    assert document["operation"] == "export" and document["outputs"]["rtss"] == str(tmp_path / "a.dcm")
    back, _ = import_names(tmp_path / "a.dcm", case)
    assert sorted(back) == sorted(r["roi_name"].replace("*", "_") for r in entry["rois"])
    run(["rtss", "import", str(rtss), "--series", str(case.root / "dicom"), "--out", str(tmp_path / "t.nii.gz"),
         "--template", template, "--quiet"], capsys)
    code, out, err = run(["rtss", "export", str(tmp_path / "t.nii.gz"), "--template", template, "--series",
                          str(case.root / "dicom"), "--series-uid", series_uid, "--out", str(tmp_path / "b.dcm"),
                          "--quiet"], capsys)
    assert code == 0, err
    names, types = import_names(tmp_path / "b.dcm", case)
    assert names == ["Skull", "Brain metastasis"] and types == ["ORGAN", "GTV"]


def import_names(path: Path, case: Any) -> Tuple[List[str], List[str]]:
    ds = pydicom.dcmread(path)
    return ([r.ROIName for r in ds.StructureSetROISequence],
            [o.RTROIInterpretedType for o in ds.RTROIObservationsSequence])


def test_seg_export_and_import(case: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rtss, entry = structure_set(case)
    series_uid = entry["referenced_series_instance_uid"]
    run(["rtss", "import", str(rtss), "--series", str(case.root / "dicom"), "--out", str(tmp_path / "l.nii.gz"),
         "--split", str(tmp_path / "split"), "--quiet"], capsys)
    masks = sorted(str(p) for p in (tmp_path / "split").iterdir())
    code, _out, err = run(["seg", "export", *masks, "--series", str(case.root / "dicom"), "--series-uid", series_uid,
                           "--out", str(tmp_path / "seg.dcm"), "--quiet"], capsys)
    assert code == 0, err
    code, _out, err = run(["seg", "import", str(tmp_path / "seg.dcm"), "--series", str(case.root / "dicom"),
                           "--series-uid", series_uid, "--out", str(tmp_path / "back.nii.gz"), "--quiet"], capsys)
    assert code == 0, err
    first = read_report(str(tmp_path / "l.json"))
    second = read_report(str(tmp_path / "back.json"))
    assert [(r["name"], r["voxel_count"]) for r in second["rois"]] == sorted(
        (r["name"].replace("*", "_"), r["voxel_count"]) for r in first["rois"])
    assert second["source"]["kind"] == "SEG"


@pytest.mark.parametrize(("args", "message"), [
    (["rtss", "import", "{tmp}/none.dcm", "--series", "{tmp}", "--out", "{tmp}/l.nii.gz"],
     "mmanno rtss import: error: {tmp}/none.dcm: no such file"),
    (["rtss", "import", "{rtss}", "--series", "{tmp}", "--out", "{tmp}/l.nrrd"],
     "mmanno rtss import: error: {tmp}/l.nrrd: --out: must end with .nii or .nii.gz (a NIfTI labelmap)"),
    (["rtss", "import", "{rtss}", "--series", "{tmp}/nowhere", "--out", "{tmp}/l.nii"],
     "mmanno rtss import: error: {tmp}/nowhere: --series: no such folder"),
    (["rtss", "export", "{tmp}/m.txt", "--series", "{tmp}", "--out", "{tmp}/r.dcm"],
     "mmanno rtss export: error: {tmp}/m.txt: MASK: must be a NIfTI file (.nii or .nii.gz)"),
    (["seg", "import", "{rtss}", "--series", "{series}", "--out", "{tmp}/l.nii"],
     "mmanno seg import: error: {rtss}: SOPClassUID: is not a DICOM Segmentation"),
    (["rtss", "import", "{rtss}", "--series", "{series}", "--out", "{tmp}/l.nii", "--template", "{tmp}/t.json"],
     "mmanno rtss import: error: {tmp}/t.json: no such file"),
])
def test_bad_input_gives_one_line_and_exit_2(args: List[str], message: str, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(cliutil, "label_set_loader", None)
    values = {"tmp": str(tmp_path), "rtss": str(TESTDATA / "rtutils_mock" / "rt.dcm"),
              "series": str(TESTDATA / "dicompyler_core")}
    code, _out, err = run([a.format(**values) for a in args] + ["--quiet"], capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith(message.format(**values)), lines[0]
    assert not (tmp_path / "l.nii").exists() and not (tmp_path / "l.json").exists()


def test_template_loader_errors_reach_the_user(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    def broken(path: str) -> LabelSet:
        raise InputError("labels/0/code: 'lung' is not UPPER_SNAKE", file=path, field="schema")

    monkeypatch.setattr(cliutil, "label_set_loader", broken)
    code, _out, err = run(["rtss", "import", str(TESTDATA / "rtutils_mock" / "rt.dcm"), "--series",
                           str(TESTDATA / "rtutils_mock"), "--out", str(tmp_path / "l.nii"), "--template",
                           str(tmp_path / "t.json"), "--quiet"], capsys)
    assert code == 2 and "schema: labels/0/code: 'lung' is not UPPER_SNAKE" in err


def test_conversion_schema_is_versioned_documented_and_enforced(tmp_path: Path) -> None:
    """Every property of the roi-conversion schema has a description and an example; a sidecar
    that breaks it is refused on read with the field named."""
    import jsonschema

    from RTSSBridgeLib.structures import SCHEMA_ID, load_schema

    schema = load_schema()
    assert schema["$id"] == SCHEMA_ID and SCHEMA_ID.endswith("/v1")
    jsonschema.validators.validator_for(schema).check_schema(schema)
    missing: List[str] = []

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            for name, sub in node.get("properties", {}).items():
                if "description" not in sub or "examples" not in sub:
                    missing.append(f"{path}/{name}")
            for key, sub in node.items():
                walk(sub, f"{path}/{key}")
        elif isinstance(node, list):
            for sub in node:
                walk(sub, path)

    walk(schema, "")
    assert missing == []
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"schema": SCHEMA_ID, "operation": "import"}))
    with pytest.raises(InputError, match=r"bad\.json: schema: \(root\): 'source' is a required property"):
        read_report(str(bad))
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(InputError, match=r"broken\.json: not readable JSON"):
        read_report(str(tmp_path / "broken.json"))
