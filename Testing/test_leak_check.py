"""The leak check (``mmanno deid verify``, R-5.5, R-7.3) finds every kind of identifying value the
originals carry - in any element, nested sequences, private tags, file meta and non-DICOM files -
and reports file and tag without the value."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict

import pydicom
import pytest

from RTSSBridgeLib.deid.verify import collect_identifying_values, compare_series, normalise, verify_output
from RTSSBridgeLib.errors import InputError

from .deid_fixtures import PLANTED, identified_dataset, save


@pytest.fixture
def original(tmp_path: Path) -> Path:
    root = tmp_path / "orig"
    save(identified_dataset(), root / "a.dcm")
    return root


def clean_copy() -> pydicom.Dataset:
    """A hand-cleaned copy of the identified object: nothing identifying left (the control)."""
    ds = identified_dataset()
    for keyword in [*PLANTED, "InstitutionAddress", "StudyStatusID"]:
        if keyword in ds:
            delattr(ds, keyword)
    for elem in list(ds):
        if elem.tag.is_private:
            del ds[elem.tag]
    ds.PatientName = "ANON"
    ds.PatientID = "ANON1"
    for keyword in ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID"):
        setattr(ds, keyword, "2.25.1" + str(len(keyword)))
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    del ds.file_meta.SourceApplicationEntityTitle
    del ds.ReferencedImageSequence
    del ds.ReferencedPerformedProcedureStepSequence
    return ds


def test_a_clean_output_passes(original: Path, tmp_path: Path) -> None:
    """The control: an object with every identifier removed has no leak."""
    save(clean_copy(), tmp_path / "out" / "x.dcm")
    report = verify_output(str(tmp_path / "out"), str(original))
    assert report["passed"] and report["n_leaks"] == 0 and report["elements_scanned"] > 40


@pytest.mark.parametrize("plant,category,where", [
    ("name", "name", "(0010,0010)"),
    ("name_in_comment", "name", "(0020,4000)"),
    ("name_reversed", "name", "(0008,103E)"),
    ("ideographic", "name", "(0008,1030)"),
    ("id_in_private", "id", "(0029,1010)"),
    ("birth_date_other_form", "birth_date", "(0018,1030)"),
    ("institution", "institution", "(0008,0080)"),
    ("address_nested", "address", "(0040,0275)[0]>(0032,1060)"),
    ("physician_nested", "name", "(0008,1032)[0]>(0008,0104)"),
    ("uid", "uid", "(0008,1140)[0]>(0008,1155)"),
    ("meta_uid", "uid", "(0002,0003)"),
    ("free_text", "free_text", "(0010,4000)"),
    ("device", "device", "(0018,1000)"),
])
def test_each_kind_of_leak_is_found_where_it_is(plant: str, category: str, where: str, original: Path,
                                                tmp_path: Path) -> None:
    """R-5.5: names (any spelling, ideographic, nested), IDs (also in private tags), birth dates in
    another format, institution, addresses, physicians inside sequences, instance UIDs (also in the
    file meta), free text and device identifiers are each reported with file, tag path and
    category - and the value itself never appears in the report."""
    ds = clean_copy()
    value = ""
    if plant == "name":
        ds.PatientName = value = PLANTED["PatientName"]
    elif plant == "name_in_comment":
        ds.ImageComments = value = "seen by radiology, patient chen meiling, ok"
    elif plant == "name_reversed":
        ds.SeriesDescription = value = "MEILING CHEN T1"
    elif plant == "ideographic":
        ds.StudyDescription = value = "陈美玲 brain"
    elif plant == "id_in_private":
        block = ds.private_block(0x0029, "ACME 1.0", create=True)
        value = f"pid {PLANTED['PatientID']}"
        block.add_new(0x10, "LO", value)
    elif plant == "birth_date_other_form":
        ds.ProtocolName = value = "born 1957-03-08"
    elif plant == "institution":
        ds.InstitutionName = value = PLANTED["InstitutionName"]
    elif plant == "address_nested":
        item = pydicom.Dataset()
        item.RequestedProcedureDescription = value = "home: " + PLANTED["PatientAddress"]
        ds.RequestAttributesSequence = [item]
    elif plant == "physician_nested":
        item = pydicom.Dataset()
        value = "Lin Zhiwei"
        item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = "X", "99", value
        ds.ProcedureCodeSequence = [item]
    elif plant == "uid":
        item = pydicom.Dataset()
        item.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
        item.ReferencedSOPInstanceUID = value = "1.3.6.1.4.1.9590.100.1.2.100"
        ds.ReferencedImageSequence = [item]
    elif plant == "meta_uid":
        value = "1.3.6.1.4.1.9590.100.1.2.100"
    elif plant == "free_text":
        ds.PatientComments = value = PLANTED["PatientComments"]
    elif plant == "device":
        ds.DeviceSerialNumber = value = PLANTED["DeviceSerialNumber"]
    path = save(ds, tmp_path / "out" / "x.dcm")
    if plant == "meta_uid":  # pydicom's writer copies SOPInstanceUID into the meta: write the meta by hand
        from pydicom.filebase import DicomBytesIO
        from pydicom.filewriter import write_file_meta_info

        data = path.read_bytes()
        meta_end = 132 + 12 + int.from_bytes(data[140:144], "little")
        ds.file_meta.MediaStorageSOPInstanceUID = value
        fp = DicomBytesIO()
        fp.is_little_endian, fp.is_implicit_VR = True, False
        write_file_meta_info(fp, ds.file_meta, enforce_standard=False)
        path.write_bytes(data[:132] + fp.getvalue() + data[meta_end:])
    report = verify_output(str(tmp_path / "out"), str(original))
    assert not report["passed"]
    hits = [leak for leak in report["leaks"] if leak["tag_path"] == where]
    assert hits and hits[0]["category"] == category and hits[0]["file"] == "x.dcm", report["leaks"]
    assert normalise(value) not in normalise(json.dumps(report, ensure_ascii=False)) or category == "uid"
    if category == "uid":
        assert value not in json.dumps(report)


def test_non_dicom_outputs_are_searched_as_text(original: Path, tmp_path: Path) -> None:
    """R-5.5: a JSON or text file in the output that repeats a name or a UID is a leak too."""
    save(clean_copy(), tmp_path / "out" / "x.dcm")
    (tmp_path / "out" / "notes.json").write_text(json.dumps({"who": "Chen Meiling"}), encoding="utf-8")
    report = verify_output(str(tmp_path / "out"), str(original))
    assert [(leak["file"], leak["tag_path"], leak["category"]) for leak in report["leaks"]] == [
        ("notes.json", "(file text)", "name")]


def test_sample_manifest_values_are_used(sample_case: Any) -> None:
    """The samples record their planted identifying values in case.json (identifying_values); the
    leak check adds them (free-text spellings of the name, the private note)."""
    case = sample_case("us-thyroid")
    found = collect_identifying_values(str(case.root))
    values = json.loads(case.manifest.read_text(encoding="utf-8"))["identifying_values"]
    for key in ("PatientNamePinyin", "PatientNameIdeographic", "PrivatePatientNote", "PatientAddress"):
        token = normalise(values[key]).replace(" ", "")
        assert token in found.tokens, key


def test_short_values_match_only_their_own_attribute(tmp_path: Path) -> None:
    """Identifiers too short to search everywhere (a 3-character ID) still leak when the same
    attribute keeps them, and do not raise false alarms inside other values."""
    ds = identified_dataset(patient={"PatientID": "123"})
    save(ds, tmp_path / "orig" / "a.dcm")
    out = clean_copy()
    out.PatientID = "123"
    out.SeriesDescription = "series 1234 5"
    save(out, tmp_path / "out" / "x.dcm")
    report = verify_output(str(tmp_path / "out"), str(tmp_path / "orig"))
    assert [leak["tag_path"] for leak in report["leaks"]] == ["(0010,0020)"]


def test_verify_refuses_missing_or_empty_inputs(original: Path, tmp_path: Path) -> None:
    """One-line errors: a missing output, missing originals, originals without DICOM."""
    with pytest.raises(InputError, match="OUT: no such file or folder"):
        verify_output(str(tmp_path / "nope"), str(original))
    with pytest.raises(InputError, match="--original: no such file or folder"):
        verify_output(str(original), str(tmp_path / "nope"))
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "a.txt").write_text("x")
    with pytest.raises(InputError, match="no DICOM file among the originals"):
        verify_output(str(original), str(tmp_path / "text"))


def test_compare_series_detects_changed_voxels(original: Path, tmp_path: Path) -> None:
    """--images: a series whose voxels changed has no twin in the output."""
    ds = clean_copy()
    save(ds, tmp_path / "same" / "x.dcm")
    assert compare_series(str(original), str(tmp_path / "same"))["passed"]
    ds.PixelData = bytes(len(ds.PixelData))
    save(ds, tmp_path / "changed" / "x.dcm")
    result: Dict[str, Any] = compare_series(str(original), str(tmp_path / "changed"))
    assert not result["passed"] and result["unmatched"][0]["modality"] == "MR"
