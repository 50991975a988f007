"""Admission check (R-6.3, R-6.3.3, R-7.2, R-001 / seed 001): screening and quarantine, the lung
radiomics CT profile's rejections, series completeness, geometry, pixel values, records pairing,
case grouping, the report and ``mmanno check``."""

from __future__ import annotations

import json
import os
import shutil
import stat
import zipfile
from pathlib import Path
from typing import Any, Dict, List, Tuple

import numpy as np
import pydicom
import pytest

from MultiModalAnnotationLib.cli import main
from RTSSBridgeLib.admission.check import run_check
from RTSSBridgeLib.admission.model import load_admission_profile
from RTSSBridgeLib.admission.report import render_admission_html
from RTSSBridgeLib.admission.screening import screen_bytes
from RTSSBridgeLib.errors import InputError
from RTSSBridgeLib.geometry import ImageGeometry
from RTSSBridgeLib.samples import make_identity, write_volume_series
from RTSSBridgeLib.samples.dicom_writer import SeriesInfo, StudyInfo

from .deid_fixtures import save


def ct_series(folder: Path, shape: Tuple[int, int, int] = (512, 512, 100), thickness: float = 1.25,
              seed: int = 0, patient: int = 0) -> List[Path]:
    """A CT series with air and a water disc (HU) on an axial grid (files named by SOP UID)."""
    n_i, n_j, _ = shape
    geometry = ImageGeometry(shape, (0.7, 0.7, thickness), (-n_i * 0.35, -n_j * 0.35, -60.0))
    yy, xx = np.mgrid[0:n_j, 0:n_i]
    image = np.where((xx - n_i / 2) ** 2 + (yy - n_j / 2) ** 2 < (0.4 * n_i) ** 2, 40.0, -1000.0)
    identity = make_identity(patient, "ct-chest")
    study = StudyInfo(f"1.2.826.0.1.3680043.10.1.{seed}.{patient}", "20200101", "080000", f"ACC{patient}", "1", "CT")
    series = SeriesInfo(f"1.2.826.0.1.3680043.10.2.{seed}.{patient}", "CT", 2, "Chest", "20200101", "080000",
                        frame_of_reference_uid=f"1.2.826.0.1.3680043.10.3.{seed}.{patient}")
    return write_volume_series(folder, geometry, lambda k: image, "CT", identity=identity, study=study,
                               series=series)


def findings(report: Dict[str, Any]) -> List[Dict[str, Any]]:
    return [f for c in report["cases"] for f in c["findings"]] + report["batch_findings"]


def codes(report: Dict[str, Any]) -> List[str]:
    return sorted(f["code"] for f in findings(report))


# ------------------------------------------------------------------------------ lung radiomics CT (seed 001)
@pytest.fixture(scope="module")
def lung(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Path]:
    """Folders of one CT series each: a good one and the four seed 001 rejections (written once)."""
    root = tmp_path_factory.mktemp("lung")
    out = {}
    out["good"] = root / "good"
    ct_series(out["good"] / "CT", seed=1)
    out["thick3"] = root / "thick3"
    ct_series(out["thick3"] / "CT", thickness=3.0, seed=2)
    out["slices90"] = root / "slices90"
    ct_series(out["slices90"] / "CT", shape=(512, 512, 90), seed=3)
    out["small256"] = root / "small256"
    ct_series(out["small256"] / "CT", shape=(256, 256, 100), seed=4)
    out["compressed"] = root / "compressed"
    from pydicom.uid import RLELossless

    for path in sorted((out["good"] / "CT").iterdir()):
        ds = pydicom.dcmread(path)
        ds.compress(RLELossless)
        save(ds, out["compressed"] / "CT" / path.name)
    out["thick5"] = root / "thick5"
    ct_series(out["thick5"] / "CT", shape=(512, 512, 30), thickness=5.0, seed=5)
    return out


@pytest.mark.parametrize("variant,code,words", [
    ("compressed", "COMPRESSED_TRANSFER_SYNTAX", "RLE Lossless"),
    ("thick3", "SLICE_THICKNESS", "slice thickness 3 mm is outside 0.625-2.5 mm"),
    ("slices90", "SLICE_COUNT", "90 slices; 100-600 required"),
    ("small256", "IMAGE_TOO_SMALL", "256 x 256 pixels per slice"),
])
def test_lung_profile_rejects_each_seed_001_violation_with_the_rule_named(
        variant: str, code: str, words: str, lung: Dict[str, Path]) -> None:
    """R-001 (seed 001): the lung radiomics CT profile rejects a compressed series, a 3 mm series,
    a 90-slice series and a 256x256 series, each with a blocking finding naming the seed's rule -
    and with no other blocking finding."""
    report = run_check(str(lung[variant]), "lung-radiomics-ct")
    assert report["verdict"] == "rejected"
    blocking = [f for f in findings(report) if f["blocking"]]
    assert [f["code"] for f in blocking] == [code], blocking
    f = blocking[0]
    assert words in f["message"]
    assert f["clause"] == "R-001" and f["rule_title"]
    rule = {"COMPRESSED_TRANSFER_SYNTAX": "transfer_syntax", "SLICE_THICKNESS": "slice_thickness",
            "SLICE_COUNT": "slice_count", "IMAGE_TOO_SMALL": "image_size"}[code]
    assert f["rule"] == rule
    assert f["series"] and f["n_files"] in (90, 100) and f["case"]


def test_lung_profile_admits_a_good_series(lung: Dict[str, Path]) -> None:
    """R-001: 512x512, 1.25 mm, 100 slices, uncompressed, HU values: admitted (the 4-level layout
    is only recommended, so its absence is a warning)."""
    report = run_check(str(lung["good"]), "lung-radiomics-ct")
    assert report["verdict"] == "admitted with warnings"
    assert codes(report) == ["FOLDER_LAYOUT"]
    assert report["n_blocking"] == 0


def test_thick_slices_pass_only_when_declared_and_uniform(lung: Dict[str, Path], tmp_path: Path) -> None:
    """R-001: thick (5 mm) data passes when the batch declares that thickness; undeclared, or a
    declared thickness that another series does not have, is rejected (the slice-count rule only
    applies to thin data)."""
    assert "SLICE_THICKNESS" in codes(run_check(str(lung["thick5"]), "lung-radiomics-ct"))
    declared = run_check(str(lung["thick5"]), "lung-radiomics-ct", declared_thickness_mm=5.0)
    assert declared["n_blocking"] == 0 and declared["declared_thickness_mm"] == 5.0
    mixed = tmp_path / "mixed"
    shutil.copytree(lung["thick5"], mixed / "a")
    shutil.copytree(lung["thick3"], mixed / "b")
    report = run_check(str(mixed), "lung-radiomics-ct", declared_thickness_mm=5.0)
    bad = [f for f in findings(report) if f["code"] == "SLICE_THICKNESS"]
    assert len(bad) == 1 and "declared for this batch (5 mm)" in bad[0]["message"]
    with pytest.raises(InputError, match="--declare-thickness: must be a positive thickness"):
        run_check(str(lung["thick5"]), "lung-radiomics-ct", declared_thickness_mm=0.0)


def test_four_level_layout_makes_one_case_per_patient_folder(tmp_path: Path) -> None:
    """R-001: class / patient ID / series / images - each class/patient folder is a case, and the
    layout rule is satisfied."""
    for cls, patient in (("adeno", "P001"), ("adeno", "P002"), ("squamous", "P003")):
        ct_series(tmp_path / cls / patient / "plain", shape=(512, 512, 100), seed=7, patient=int(patient[1:]))
    report = run_check(str(tmp_path), "lung-radiomics-ct")
    assert [c["case"] for c in report["cases"]] == ["adeno/P001", "adeno/P002", "squamous/P003"]
    assert report["verdict"] == "admitted" and codes(report) == []


# ------------------------------------------------------------------------------ screening
@pytest.fixture(scope="module")
def small_series(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("small") / "CT"
    ct_series(folder, shape=(32, 32, 4), seed=9)
    return folder


def _bad_file(kind: str, template: bytes, folder: Path) -> Path:
    if kind == "polyglot-pe":
        path, data = folder / "IM9999.dcm", b"MZ\x90\x00" + template[4:128] + template[128:]
    elif kind == "polyglot-elf":
        path, data = folder / "IM9998.dcm", b"\x7fELF\x02\x01\x01" + template[7:]
    elif kind == "truncated-pixels":
        path, data = folder / "IM9997.dcm", template[: len(template) - 1000]
    elif kind == "truncated-header":
        path, data = folder / "IM9996.dcm", template[:140]
    elif kind == "text-named-dcm":
        path, data = folder / "IM9995.dcm", b"Patient report: all good\n"
    elif kind == "zip":
        path = folder / "images.zip"
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("a.dcm", template)
        return path
    elif kind == "script":
        path, data = folder / "install.sh", b"#!/bin/sh\nrm -rf /\n"
    elif kind == "executable":
        path, data = folder / "viewer", b"\x7fELF" + bytes(200)
    else:  # empty
        path, data = folder / "IM9994.dcm", b""
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("kind,code,words", [
    ("polyglot-pe", "POLYGLOT_PREAMBLE", "preamble holds an executable header (Windows PE/DOS executable header"),
    ("polyglot-elf", "POLYGLOT_PREAMBLE", "preamble holds an executable header (ELF executable header)"),
    ("truncated-pixels", "TRUNCATED", "truncated"),
    ("truncated-header", "TRUNCATED", ""),
    ("text-named-dcm", "NOT_DICOM", "named .dcm but it is not DICOM"),
    ("zip", "ARCHIVE", "zip archive"),
    ("script", "SCRIPT", ""),
    ("executable", "EXECUTABLE", "ELF executable header"),
    ("empty", "EMPTY_FILE", "empty"),
])
def test_each_screening_case_is_quarantined_with_a_clear_finding(kind: str, code: str, words: str,
                                                                 small_series: Path, tmp_path: Path) -> None:
    """R-6.3.3: polyglot preambles (PE, ELF), truncated files, a text file named .dcm, a zip, a
    script, an executable and an empty file are each copied to the quarantine (read-only, with
    SHA-256), reported with a code naming why, and never loaded as an image."""
    case = tmp_path / "delivery"
    shutil.copytree(small_series, case / "CT")
    template = sorted((case / "CT").iterdir())[0].read_bytes()
    bad = _bad_file(kind, template, case / "CT")
    quarantine = tmp_path / "quarantine"
    report = run_check(str(case), "generic", quarantine=str(quarantine))
    rel = str(bad.relative_to(case))
    hits = [f for f in findings(report) if rel in f["files"]]
    assert [f["code"] for f in hits] == [code]
    assert words in hits[0]["message"] and "quarantined, never loaded" in hits[0]["message"]
    assert hits[0]["blocking"] and hits[0]["clause"] == "R-6.3.3" and hits[0]["case"] == "CT"
    (entry,) = report["quarantine"]["files"]
    assert entry["file"] == rel and entry["code"] == code
    copy = quarantine / entry["copied_to"]
    assert copy.read_bytes() == bad.read_bytes()
    assert bad.exists(), "the input must not be moved"
    if os.name == "posix":
        assert stat.S_IMODE(copy.stat().st_mode) == 0o400
    manifest = json.loads((quarantine / "quarantine.json").read_text(encoding="utf-8"))
    assert manifest["files"][0]["sha256"] == entry["sha256"]
    loaded = [s for c in report["cases"] for s in c["series"]]
    assert len(loaded) == 1 and loaded[0]["n_files"] == 4  # the good series, without the bad file


def test_screening_by_content_not_by_name() -> None:
    """R-6.3.3: DICOM without extension and bare data sets are DICOM; allowed data files are data;
    an oversized file is refused before it is read; a zip-preamble polyglot is refused."""
    part10 = b"\0" * 128 + b"DICM" + b"\x02\x00\x00\x00UL\x04\x00" + bytes(200)
    assert screen_bytes("IM0001", part10, 400).kind == "dicom"
    assert screen_bytes("raw", b"\x08\x00\x05\x00CS\x0a\x00ISO_IR 100" + bytes(100), 120).kind == "dicom"
    assert screen_bytes("clinical.csv", b"ID,stage\n1,IIa\n", 16).kind == "data"
    assert screen_bytes("labels.nii.gz", b"\x1f\x8b\x08" + bytes(40), 43).kind == "data"
    big = screen_bytes("huge.dcm", part10, 10 * 1024 * 1024, max_file_mb=1)
    assert big.rejected and big.code is not None and big.code.value == "OVERSIZE"
    zipped = screen_bytes("x.dcm", b"PK\x03\x04" + bytes(124) + b"DICM" + bytes(100), 300)
    assert zipped.code is not None and zipped.code.value == "POLYGLOT_PREAMBLE"
    tiff = screen_bytes("x.dcm", b"II*\x00" + bytes(124) + b"DICM" + bytes(100), 300)
    assert tiff.kind == "dicom"  # a TIFF header in the preamble is allowed by PS3.10


# ------------------------------------------------------------------------------ completeness and geometry
def _edit(folder: Path, index: int, change: Any) -> None:
    path = sorted(folder.iterdir(), key=lambda p: float(pydicom.dcmread(p).ImagePositionPatient[2]))[index]
    ds = pydicom.dcmread(path)
    change(ds)
    save(ds, path)


@pytest.mark.parametrize("defect,code,severity", [
    ("drop", "MISSING_SLICES", "error"),
    ("duplicate", "DUPLICATE_SLICES", "error"),
    ("flip", "SLICE_FLIPPED", "error"),
    ("misorder", "MISORDERED_INSTANCES", "warning"),
    ("no-spacing", "NO_PIXEL_SPACING", "error"),
    ("skew", "NON_ORTHONORMAL_DIRECTION", "error"),
    ("no-position", "MISSING_GEOMETRY", "error"),
])
def test_series_completeness_and_geometry_defects(defect: str, code: str, severity: str, tmp_path: Path) -> None:
    """R-7.2: missing, duplicated, flipped and misordered slices; missing spacing, a direction that
    is not orthonormal and a missing origin - each found with its code and severity."""
    folder = tmp_path / "CT"
    files = ct_series(folder, shape=(16, 16, 8), seed=11)
    if defect == "drop":
        sorted(files, key=lambda p: float(pydicom.dcmread(p).ImagePositionPatient[2]))[3].unlink()
    elif defect == "duplicate":
        ds = pydicom.dcmread(files[2])
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = "1.2.826.0.1.3680043.10.99"
        save(ds, folder / "dup.dcm")
    elif defect == "flip":
        _edit(folder, 4, lambda ds: setattr(ds, "ImageOrientationPatient", [-1, 0, 0, 0, 1, 0]))
    elif defect == "misorder":
        first, second = files[2], files[5]
        a, b = pydicom.dcmread(first), pydicom.dcmread(second)
        a.InstanceNumber, b.InstanceNumber = b.InstanceNumber, a.InstanceNumber
        save(a, first)
        save(b, second)
    elif defect == "no-spacing":
        for f in files:
            ds = pydicom.dcmread(f)
            del ds.PixelSpacing
            save(ds, f)
    elif defect == "skew":
        for f in files:
            ds = pydicom.dcmread(f)
            ds.ImageOrientationPatient = [1, 0, 0, 0.1, 1, 0]
            save(ds, f)
    else:
        _edit(folder, 2, lambda ds: delattr(ds, "ImagePositionPatient"))
    report = run_check(str(tmp_path), "generic")
    hits = [f for f in findings(report) if f["code"] == code]
    assert hits, codes(report)
    assert hits[0]["severity"] == severity and hits[0]["files"]
    assert hits[0]["blocking"] == (severity == "error")
    assert report["verdict"] == ("rejected" if severity == "error" else "admitted with warnings")


# ------------------------------------------------------------------------------ pixel values
def test_ct_values_must_be_hounsfield_units(tmp_path: Path) -> None:
    """R-7.2: CT stored without Rescale Slope/Intercept (values not in HU) is flagged: a warning in
    the generic profile (no air near -1000 HU), a blocking error in the lung profile."""
    folder = tmp_path / "CT"
    for f in ct_series(folder, shape=(512, 512, 100), seed=12):
        ds = pydicom.dcmread(f)
        del ds.RescaleIntercept, ds.RescaleSlope
        save(ds, f)
    generic = run_check(str(tmp_path), "generic")
    assert "CT_NOT_HU" in codes(generic) and generic["n_blocking"] == 0
    lung = run_check(str(tmp_path), "lung-radiomics-ct")
    assert {f["code"] for f in findings(lung) if f["blocking"]} >= {"CT_NO_RESCALE"}


@pytest.fixture(scope="module")
def mr_copies(sample_case: Any, tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Path]:
    """The T1W+C series of the mr-brain-mets sample: as is, with one slice's signal dropped, and
    with a strong left-right bias field multiplied in."""
    case = sample_case("mr-brain-mets", slices=24)
    source = case.series_by_key("T1W_C").dir
    root = tmp_path_factory.mktemp("mr")
    out = {}
    for variant in ("clean", "dropout", "bias"):
        target = root / variant / "MR"
        shutil.copytree(source, target)
        files = sorted(target.iterdir(), key=lambda p: float(pydicom.dcmread(p).ImagePositionPatient[2]))
        for k, f in enumerate(files):
            ds = pydicom.dcmread(f)
            pixels = ds.pixel_array.astype(np.float64)
            if variant == "dropout" and k == 12:
                pixels *= 0.1
            elif variant == "bias":
                gain = np.linspace(0.3, 1.7, ds.Columns)[None, :]  # columns run right -> left (LPS +x)
                pixels *= gain
            else:
                continue
            ds.PixelData = np.clip(pixels, 0, 4095).astype("<u2").tobytes()
            save(ds, f)
        out[variant] = root / variant
    return out


@pytest.mark.parametrize("variant,expected", [("clean", set()), ("dropout", {"MR_SIGNAL_DROPOUT"}),
                                              ("bias", {"MR_BIAS_FIELD"})])
def test_mr_dropout_and_bias_field_heuristics(variant: str, expected: set, mr_copies: Dict[str, Path]) -> None:
    """R-7.2: MR signal dropout and a severe bias field are flagged as heuristic warnings (never
    blocking), and the clean sample raises neither."""
    report = run_check(str(mr_copies[variant]), "generic")
    found = {f["code"] for f in findings(report)} & {"MR_SIGNAL_DROPOUT", "MR_BIAS_FIELD"}
    assert found == expected
    assert report["n_blocking"] == 0
    if expected:
        assert "heuristic" in next(f for f in findings(report) if f["code"] in expected)["message"]


# ------------------------------------------------------------------------------ cases, records, consistency
def test_records_pair_with_cases_without_quoting_identifiers(tmp_path: Path) -> None:
    """R-6.3: a clinical table pairs rows with cases by Patient ID; a case without a row and a row
    without a case are reported by case folder and line number, never by the identifier."""
    ct_series(tmp_path / "case-a" / "CT", shape=(16, 16, 6), seed=20, patient=1)
    ct_series(tmp_path / "case-b" / "CT", shape=(16, 16, 6), seed=21, patient=2)
    id_a = make_identity(1, "ct-chest").patient_id
    (tmp_path / "clinical.csv").write_text(f"ID,stage\n{id_a},IIa\nX999999,IV\n", encoding="utf-8")
    report = run_check(str(tmp_path), "generic")
    assert [c["case"] for c in report["cases"]] == ["case-a/CT", "case-b/CT"]
    unpaired = [f for f in findings(report) if f["code"] == "RECORD_UNPAIRED_CASE"]
    assert [f["case"] for f in unpaired] == ["case-b/CT"]
    orphan = [f for f in findings(report) if f["code"] == "RECORD_UNPAIRED_ROW"]
    assert len(orphan) == 1 and "line 3" in orphan[0]["message"] and orphan[0]["case"] is None
    text = json.dumps(report, ensure_ascii=False)
    for identity in (make_identity(1, "ct-chest"), make_identity(2, "ct-chest")):
        assert identity.patient_id not in text and identity.patient.pinyin not in text
        assert identity.patient.family_pinyin + "^" not in text


def test_inconsistent_patient_attributes_in_one_case(tmp_path: Path) -> None:
    """R-6.3: within a case (a folder with case.json), series that disagree on the patient are an
    error naming the attribute, not the values."""
    ct_series(tmp_path / "dicom" / "A", shape=(16, 16, 6), seed=30, patient=1)
    ct_series(tmp_path / "dicom" / "B", shape=(16, 16, 6), seed=31, patient=2)
    (tmp_path / "case.json").write_text("{}", encoding="utf-8")
    report = run_check(str(tmp_path), "generic")
    assert report["n_cases"] == 1
    hit = next(f for f in findings(report) if f["code"] == "INCONSISTENT_PATIENT")
    assert "PatientID" in hit["message"] and hit["blocking"]


def test_case_count_and_required_modalities(tmp_path: Path, small_series: Path) -> None:
    """R-6.3: a batch without a case fails the case count; a case without CT fails the lung
    profile's required modality."""
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("nothing here", encoding="utf-8")
    report = run_check(str(tmp_path / "empty"), "generic")
    assert codes(report) == ["CASE_COUNT"] and report["verdict"] == "rejected"
    mr = tmp_path / "mr"
    shutil.copytree(small_series, mr / "MR")
    for f in (mr / "MR").iterdir():
        ds = pydicom.dcmread(f)
        ds.Modality = "MR"
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
        save(ds, f)
    lung = run_check(str(mr), "lung-radiomics-ct")
    assert "MODALITY_MISSING" in codes(lung)


def test_samples_are_admitted_by_the_generic_profile(sample_case: Any) -> None:
    """R-7.2: every sample kind passes the generic profile (no false alarm), the RTSS-free samples
    with no finding at all."""
    for kind in ("ct-chest", "mr-brain-mets", "pet-ct", "us-thyroid", "xray-ra"):
        options = {"slices": 24} if kind in ("ct-chest", "mr-brain-mets", "pet-ct") else {}
        report = run_check(str(sample_case(kind, **options).root), "generic")
        assert report["verdict"] == "admitted", (kind, codes(report))


def test_profile_errors(tmp_path: Path) -> None:
    """Unknown profiles and invalid profile files fail with one line."""
    with pytest.raises(InputError, match="unknown admission profile 'nope'"):
        load_admission_profile("nope")
    doc = json.loads(Path(load_admission_profile("generic").path).read_text(encoding="utf-8"))
    doc["rules"][0]["rule"] = "astrology"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(doc), encoding="utf-8")
    with pytest.raises(InputError, match=r"bad\.json: schema: rules/0/rule"):
        load_admission_profile(str(bad))
    with pytest.raises(InputError, match="PATH: no such file or folder"):
        run_check(str(tmp_path / "nope"), "generic")


# ------------------------------------------------------------------------------ command line and report
def test_cli_check_writes_json_html_and_quarantine(lung: Dict[str, Path], small_series: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """mmanno check PATH --profile NAME --json OUT --report OUT.html: exit 1 when a blocking rule
    fails, 0 when admitted, 2 on bad input; the quarantine goes beside the report."""
    out = tmp_path / "thick.json"
    code = main(["check", str(lung["thick3"]), "--profile", "lung-radiomics-ct", "--json", str(out),
                 "--report", str(tmp_path / "thick.html"), "--quiet"])
    printed = capsys.readouterr().out
    assert code == 1 and "BLOCKING SLICE_THICKNESS" in printed and "(rule R-001:" in printed
    report = json.loads(out.read_text(encoding="utf-8"))
    html = (tmp_path / "thick.html").read_text(encoding="utf-8")
    assert "SLICE_THICKNESS" in html and "rejected" in html and "<script" not in html
    assert html == render_admission_html(report)
    code = main(["check", str(lung["good"]), "--profile", "lung-radiomics-ct", "--json", "-", "--quiet"])
    assert code == 0 and json.loads(capsys.readouterr().out)["verdict"] == "admitted with warnings"
    delivery = tmp_path / "delivery"
    shutil.copytree(small_series, delivery / "CT")
    (delivery / "CT" / "notes.dcm").write_text("hello", encoding="utf-8")
    code = main(["check", str(delivery), "--json", str(tmp_path / "d.json"), "--quiet"])
    capsys.readouterr()
    assert code == 1 and (tmp_path / "d.quarantine" / "files" / "CT" / "notes.dcm").is_file()
    code = main(["check", str(delivery), "--json", str(tmp_path / "d.json"), "--quiet"])
    capsys.readouterr()
    assert (tmp_path / "d.quarantine-2" / "quarantine.json").is_file()  # never mixed into an older one
    code = main(["check", str(tmp_path / "missing"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.strip() == f"mmanno check: error: {tmp_path / 'missing'}: PATH: no such file or folder"
    code = main(["check", str(delivery), "--profile", "nope", "--quiet"])
    assert code == 2 and "unknown admission profile" in capsys.readouterr().err


