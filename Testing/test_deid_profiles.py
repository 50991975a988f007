"""De-identification profiles reproduce their sources action by action (R-7.3; seeds 002 and 004;
DICOM PS3.15 Table E.1-1).

The seed tables are transcribed here from ``shared/seeds`` independently of the profile files;
each row is one test that checks the profile's row and the action's effect on a real file.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any, Dict, List, Tuple

import pydicom
import pytest

from RTSSBridgeLib.deid.engine import FileDeidentifier
from RTSSBridgeLib.deid.keys import Keyring, shift_da, transform_dates
from RTSSBridgeLib.deid.profile import Act, compile_profile, load_profile_document
from RTSSBridgeLib.errors import InputError
from RTSSBridgeLib.resources import resources_dir
from RTSSBridgeLib.uids import keyed_uid

from .deid_fixtures import EXPLICIT, PLANTED, file_bytes, identified_dataset, rtss_for

KEY = b"seed-table-tests-key-0123456789abcdef"

# seed 002, table 5-1 (images): (row, tag, seed action)
SEED_002_5_1: List[Tuple[int, str, str]] = [
    (1, "00080018", "假名"), (2, "00100010", "假名"), (3, "00100020", "假名"), (4, "00100021", "移除"),
    (5, "00100030", "填空"), (6, "00100040", "保留"), (7, "00101000", "移除"), (8, "00101001", "移除"),
    (9, "00101010", "保留"), (10, "001021B0", "填空"), (11, "00080020", "日期概化"), (12, "00080030", "保留"),
    (13, "00080050", "填空"), (14, "00080090", "填空"), (15, "00081060", "填空"), (16, "00081070", "移除"),
    (17, "0020000D", "假名"), (18, "00080070", "保留"), (19, "00080080", "移除"), (20, "00081010", "移除"),
    (21, "00081040", "移除"), (22, "00081080", "移除"), (23, "00081090", "保留"), (24, "00181000", "移除"),
    (25, "0020000E", "假名"), (26, "0032000A", "移除"), (27, "00321032", "移除"), (28, "00321033", "移除"),
    (29, "00321060", "移除"), (30, "00380020", "移除"), (31, "00400253", "移除"), (32, "00400254", "移除"),
    (33, "00400260", "移除"), (34, "00081111", "填空"),
]
# seed 002, table 5-2 (RT Structure Set)
SEED_002_5_2: List[Tuple[int, str, str]] = [
    (1, "00080012", "日期概化"), (2, "00080013", "保留"), (3, "00080018", "假名"), (4, "00100010", "假名"),
    (5, "00100020", "假名"), (6, "00100030", "填充"), (7, "00100040", "保留"), (8, "00101010", "保留"),
    (9, "00080020", "日期概化"), (10, "00080030", "保留"), (11, "00080050", "填充"), (12, "00080090", "填充"),
    (13, "00081030", "保留"), (14, "0020000D", "假名"), (15, "0020000E", "假名"), (16, "00081090", "保留"),
    (17, "00181020", "保留"), (18, "30060008", "日期概化"), (19, "30060009", "保留"), (20, "30060010", "假名"),
]
# seed 004, table 5-1 (CR/DX images)
SEED_004_5_1: List[Tuple[int, str, str]] = [
    (1, "00080018", "假名"), (2, "00100010", "假名"), (3, "00100020", "假名"), (4, "00100021", "移除"),
    (5, "00100030", "日期概化"), (6, "00100040", "保留"), (7, "00101000", "移除"), (8, "00101001", "移除"),
    (9, "00101010", "保留"), (10, "001021B0", "填空"), (11, "00104000", "填空"), (12, "00080020", "日期概化"),
    (13, "00080030", "保留"), (14, "00080050", "假名"), (15, "00080090", "填空"), (16, "00081048", "填空"),
    (17, "00081070", "填空"), (18, "0020000D", "假名"), (19, "00324000", "填空"), (20, "00080070", "保留"),
    (21, "00080080", "移除"), (22, "00081010", "填空"), (23, "00081090", "保留"), (24, "0020000E", "假名"),
    (25, "00321033", "保留"), (26, "00321060", "保留"), (27, "00400253", "移除"), (28, "00400254", "移除"),
    (29, "00400260", "移除"),
]
SEED_ACTIONS = {"假名": "pseudonymise", "移除": "remove", "填空": "blank", "填充": "blank", "保留": "keep",
                "日期概化": "generalise_date"}
TABLES = {
    ("brain-mets-mr", "5-1"): SEED_002_5_1,
    ("brain-mets-mr", "5-2"): SEED_002_5_2,
    ("ra-xray", "5-1"): SEED_004_5_1,
}
CASES = [(profile, table, row, tag, action) for (profile, table), rows in TABLES.items()
         for row, tag, action in rows]


def _ids(case: Tuple[str, str, int, str, str]) -> str:
    profile, table, row, tag, _ = case
    return f"{profile}-{table}-row{row:02d}-{pydicom.datadict.keyword_for_tag(int(tag, 16)) or tag}"


@pytest.fixture(scope="module")
def outputs() -> Dict[Tuple[str, str], Tuple[pydicom.Dataset, pydicom.Dataset, FileDeidentifier]]:
    """(profile, table) -> (original, de-identified, engine): an MR image for tables 5-1 and an
    RT Structure Set for table 5-2."""
    results = {}
    for profile, table in TABLES:
        engine = FileDeidentifier(compile_profile(profile), Keyring(KEY))
        image = identified_dataset("MR" if profile == "brain-mets-mr" else "CR")
        original = rtss_for([image]) if table == "5-2" else image
        data = file_bytes(original, EXPLICIT)
        chunks, outcome = engine.deidentify("in.dcm", data)
        assert outcome.written
        results[(profile, table)] = (pydicom.dcmread(io.BytesIO(data)),
                                     pydicom.dcmread(io.BytesIO(b"".join(bytes(c) for c in chunks))), engine)
    return results


@pytest.mark.parametrize("case", CASES, ids=[_ids(c) for c in CASES])
def test_seed_table_row(case: Tuple[str, str, int, str, str], outputs: Dict[Any, Any]) -> None:
    """R-7.3, seeds 002 (tables 5-1, 5-2) and 004 (table 5-1): the profile has the seed's row with
    its action, and that action is what happens to the attribute in a real file."""
    profile, table, row, tag, seed_action = case
    document = load_profile_document(profile)
    matches = [r for r in document["attributes"] if r["tag"] == tag and r.get("source", {}).get("table") == table
               and r["source"].get("row") == row]
    assert len(matches) == 1, f"profile {profile} has no row {table}/{row} for {tag}"
    assert matches[0]["action"] == SEED_ACTIONS[seed_action]
    assert matches[0]["source"]["seed_action"] == seed_action
    if table == "5-2":
        assert matches[0]["modalities"] == ["RTSTRUCT"]

    original, result, engine = outputs[(profile, table)]
    t = int(tag, 16)
    assert t in original, f"the test object lacks {tag}"
    before = original[t]
    action = SEED_ACTIONS[seed_action]
    if action == "remove":
        assert t not in result
    elif action == "blank":
        assert t in result
        assert result[t].value in ("", None, b"") or (result[t].VR == "SQ" and len(result[t].value) == 0)
    elif action == "keep":
        assert result[t].value == before.value
    elif action == "generalise_date":
        offset = engine.keys.date_offset_days(original.PatientID.encode(), *engine.profile.shift_days)
        expected = shift_da(str(before.value), offset, engine.profile.generalise)
        assert result[t].value == expected
        assert str(result[t].value).endswith("0101" if engine.profile.generalise == "year" else "01")
        assert result[t].value != before.value
    else:  # pseudonymise
        if before.VR == "UI":
            assert result[t].value == keyed_uid(KEY, str(before.value))
        elif before.VR == "SQ":  # 3006,0010: every UID inside pseudonymised, structure kept
            ref_before, ref_after = before.value[0], result[t].value[0]
            assert ref_after.FrameOfReferenceUID == keyed_uid(KEY, ref_before.FrameOfReferenceUID)
            study = ref_after.RTReferencedStudySequence[0]
            assert study.ReferencedSOPInstanceUID == keyed_uid(KEY, original.StudyInstanceUID)
            assert study.ReferencedSOPClassUID == ref_before.RTReferencedStudySequence[0].ReferencedSOPClassUID
            series = study.RTReferencedSeriesSequence[0]
            image_uid = ref_before.RTReferencedStudySequence[0].RTReferencedSeriesSequence[0] \
                .ContourImageSequence[0].ReferencedSOPInstanceUID
            assert series.ContourImageSequence[0].ReferencedSOPInstanceUID == keyed_uid(KEY, image_uid)
        else:
            assert result[t].value != before.value
            assert str(result[t].value)
            patient_pseudonym = str(result.PatientID)
            if tag == "00100010":
                assert str(result[t].value) == f"{patient_pseudonym}_Name"  # the cards' 1706922010_Name pattern
            if tag == "00100020":
                prefix = "RA" if profile == "ra-xray" else ""
                assert patient_pseudonym.startswith(prefix) and patient_pseudonym[len(prefix):].isdigit()
                assert len(patient_pseudonym) == len(prefix) + 10
            if tag == "00080050":  # seed 004: RAH / RAF kept (hand and foot exams of one case)
                assert str(result[t].value).startswith("RAH") and str(result[t].value)[3:].isdigit()


@pytest.mark.parametrize("profile,table,row,rule,seed_action", [
    ("brain-mets-mr", "5-1", 35, "all_instance_uids", "假名"), ("brain-mets-mr", "5-1", 36, "all_dates", "日期概化"),
    ("brain-mets-mr", "5-1", 37, "all_private_attributes", "移除"),
    ("brain-mets-mr", "5-2", 21, "all_instance_uids", "假名"),
    ("brain-mets-mr", "5-2", 22, "all_private_attributes", "移除"),
    ("ra-xray", "5-1", 30, "all_instance_uids", "假名"), ("ra-xray", "5-1", 31, "all_dates", "日期概化"),
    ("ra-xray", "5-1", 32, "all_private_attributes", "移除"),
])
def test_seed_table_general_row(profile: str, table: str, row: int, rule: str, seed_action: str,
                                outputs: Dict[Any, Any]) -> None:
    """R-7.3: the seeds' rows for all instance UIDs, all dates and all private tags."""
    document = load_profile_document(profile)
    assert any(g["applies_to"] == rule and g["source"]["table"] == table and g["source"]["row"] == row
               and g["source"]["seed_action"] == seed_action for g in document["general_rows"])
    original, result, engine = outputs[(profile, table)]
    if rule == "all_private_attributes":
        assert not [e for e in result.iterall() if e.tag.is_private]
        assert [e for e in original.iterall() if e.tag.is_private]
    elif rule == "all_instance_uids":
        originals = {str(e.value) for e in original.iterall()
                     if e.VR == "UI" and not str(e.value).startswith("1.2.840.10008")}
        after = {str(e.value) for e in result.iterall() if e.VR == "UI"}
        assert originals and not originals & after
        instance_after = {u for u in after if not u.startswith("1.2.840.10008")}
        assert instance_after <= {keyed_uid(KEY, u) for u in originals}
        nested = [e for e in result.iterall() if e.keyword == "ReferencedSOPInstanceUID"]
        assert nested and all(str(e.value) in {keyed_uid(KEY, u) for u in originals} for e in nested)
    else:
        offset = engine.keys.date_offset_days(original.PatientID.encode(), *engine.profile.shift_days)
        for keyword in ("SeriesDate", "AcquisitionDate", "ContentDate"):
            assert result[keyword].value == shift_da(original[keyword].value, offset, engine.profile.generalise)
        dt = result.AcquisitionDateTime
        assert str(dt)[:8] == shift_da(str(original.AcquisitionDateTime)[:8], offset, engine.profile.generalise)
        assert str(dt)[8:] == str(original.AcquisitionDateTime)[8:]  # the time of day is kept


def test_seed_date_examples() -> None:
    """Seeds 002 (19010415→19010101, year) and 004 (20171221→20171201, month): generalisation
    alone (offset 0) reproduces the cards' examples; a patient's offset moves every date alike."""
    assert transform_dates("19010415", "DA", 0, "year") == ("19010101", 0)
    assert transform_dates("20171221", "DA", 0, "month") == ("20171201", 0)
    assert transform_dates("20171221\\20180102", "DA", -10, None) == ("20171211\\20171223", 0)
    assert transform_dates("2017.12.21", "DA", 0, "month") == ("20171201", 0)
    assert transform_dates("garbage", "DA", -5, None) == ("", 1)  # never left as it was
    assert transform_dates("20171221093000.5+0800", "DT", 1, None) == ("20171222093000.5+0800", 0)


def test_seed_profiles_declare_the_cards_options() -> None:
    """Seeds 002 and 004 tick Retain Longitudinal Temporal Information (Modified Dates), Retain
    Patient Characteristics and Retain Device Identity; both profiles build on 'basic'."""
    for name in ("brain-mets-mr", "ra-xray"):
        doc = load_profile_document(name)
        assert doc["base"] == "basic"
        assert doc["options"] == ["retain_longitudinal_modified_dates", "retain_patient_characteristics",
                                  "retain_device_identity"]
        compiled = compile_profile(name)
        assert compiled.method_codes == (("113100", "Basic Application Confidentiality Profile"),
                                         ("113107", "Retain Longitudinal Temporal Information Modified Dates Option"),
                                         ("113108", "Retain Patient Characteristics Option"),
                                         ("113109", "Retain Device Identity Option"))


# ------------------------------------------------------------------------------ PS3.15 Table E.1-1
def test_basic_profile_encodes_the_standard_table() -> None:
    """DICOM PS3.15 Table E.1-1 (2024b) as data: every listed attribute with its basic code and its
    option columns (spot checks of rows whose codes are well known)."""
    doc = json.loads((resources_dir() / "profiles" / "deid" / "basic.json").read_text(encoding="utf-8"))
    rows = {r["tag"]: r for r in doc["attributes"]}
    assert len(doc["attributes"]) == len(rows) >= 600
    assert rows["00080050"]["action"] == "Z"  # Accession Number
    assert rows["00080020"]["action"] == "Z"  # Study Date
    assert rows["00080020"]["options"]["retain_longitudinal_modified_dates"] == "C"
    assert rows["00080020"]["options"]["retain_longitudinal_full_dates"] == "K"
    assert rows["00080080"]["action"] == "X/Z/D"  # Institution Name
    assert rows["00181000"]["action"] == "X/Z/D" and rows["00181000"]["options"]["retain_device_identity"] == "K"
    assert rows["00100040"]["action"] == "Z" and rows["00100040"]["options"]["retain_patient_characteristics"] == "K"
    assert rows["00080018"]["action"] == "U"  # SOP Instance UID
    assert rows["0020000D"]["action"] == "U" and rows["30060024"]["action"] == "U"
    assert rows["00204000"]["action"] == "X"  # Image Comments
    assert rows["60XX3000"]["action"] == "X" and rows["50XXXXXX"]["action"] == "X"  # overlays, curves
    assert rows["FFFAFFFA"]["action"] == "X"  # Digital Signatures Sequence
    assert doc["source"].startswith("DICOM PS3.15 2024b Table E.1-1")


@pytest.mark.parametrize("options,expected", [
    ((), {"PatientSex": "", "StationName": "", "StudyDate": "", "PatientAge": None, "DeviceSerialNumber": "",
          "AcquisitionDate": ""}),
    (("retain_patient_characteristics",), {"PatientSex": "F", "PatientAge": "062Y"}),
    (("retain_device_identity",), {"StationName": PLANTED["StationName"],
                                   "DeviceSerialNumber": PLANTED["DeviceSerialNumber"]}),
    (("retain_longitudinal_full_dates",), {"StudyDate": "20170415", "AcquisitionDate": "20170416"}),
])
def test_basic_profile_options(options: Tuple[str, ...], expected: Dict[str, Any]) -> None:
    """PS3.15 options: without them sex is blanked, age removed, station and device serial blanked,
    dates blanked; each option keeps its attributes."""
    engine = FileDeidentifier(compile_profile("basic", options), Keyring(KEY))
    chunks, _ = engine.deidentify("x.dcm", file_bytes(identified_dataset()))
    result = pydicom.dcmread(io.BytesIO(b"".join(bytes(c) for c in chunks)))
    for keyword, value in expected.items():
        if value is None:
            assert keyword not in result
        else:
            assert str(result[keyword].value) == value, keyword


def test_modified_dates_option_shifts_dates_by_one_offset_per_patient() -> None:
    """Retain Longitudinal Temporal Information Modified Dates: every date of a patient moves by
    the same keyed offset (intervals kept); another patient gets another offset; times are kept."""
    engine = FileDeidentifier(compile_profile("basic", ["retain_longitudinal_modified_dates"]), Keyring(KEY))
    a = pydicom.dcmread(io.BytesIO(b"".join(
        bytes(c) for c in engine.deidentify("a", file_bytes(identified_dataset()))[0])))
    other = identified_dataset(patient={"PatientID": "B0000001"})
    b = pydicom.dcmread(io.BytesIO(b"".join(bytes(c) for c in engine.deidentify("b", file_bytes(other))[0])))
    import datetime as dt

    def day(text: str) -> dt.date:
        return dt.date(int(text[:4]), int(text[4:6]), int(text[6:8]))

    assert (day(a.AcquisitionDate) - day(a.StudyDate)).days == 1  # interval kept
    assert a.StudyDate != "20170415" and b.StudyDate != "20170415" and a.StudyDate != b.StudyDate
    assert a.StudyTime == "093436.598" and a.LongitudinalTemporalInformationModified == "MODIFIED"


def test_compiled_actions_follow_the_resolution_rules() -> None:
    """Compound PS3.15 codes resolve as documented: X/Z, Z/D, X/Z/D blank; X/D dummy; options K win."""
    basic = compile_profile("basic")
    assert basic.rule_for(0x00080080).act == Act.BLANK  # Institution Name X/Z/D
    assert basic.rule_for(0x00080023).act == Act.BLANK  # Content Date Z/D
    assert basic.rule_for(0x00080012).act == Act.DUMMY  # Instance Creation Date X/D
    assert basic.rule_for(0x60103000).act == Act.REMOVE  # overlay data of group 6010
    device = compile_profile("basic", ["retain_device_identity"])
    assert device.rule_for(0x00181000).act == Act.KEEP
    seed = compile_profile("brain-mets-mr")
    assert seed.rule_for(0x00081030).act == Act.KEEP  # card section 2 publishes it
    assert seed.rule_for(0x00081030, "RTSTRUCT").act == Act.KEEP
    assert seed.rule_for(0x00080021).act == Act.GENERALISE_DATE  # "all dates" row over the base


def test_profile_errors_name_the_problem(tmp_path: Path) -> None:
    """Unknown profiles, unsupported options, bad files and a zero-containing shift range fail."""
    with pytest.raises(InputError, match="unknown de-identification profile 'nope'"):
        compile_profile("nope")
    with pytest.raises(InputError, match="option 'clean_descriptors' is not supported"):
        compile_profile("basic", ["clean_descriptors"])
    with pytest.raises(InputError, match="exclude each other"):
        compile_profile("basic", ["retain_longitudinal_full_dates", "retain_longitudinal_modified_dates"])
    bad = tmp_path / "bad.json"
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(InputError, match=r"bad\.json: JSON: not valid JSON"):
        compile_profile(str(bad))
    doc = load_profile_document("ra-xray")
    doc["dates"]["shift_days"] = {"min": -10, "max": 10}
    zero = tmp_path / "zero.json"
    zero.write_text(json.dumps(doc), encoding="utf-8")
    with pytest.raises(InputError, match="must not contain 0"):
        compile_profile(str(zero))
    doc = load_profile_document("ra-xray")
    doc["attributes"][0]["action"] = "shred"
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps(doc), encoding="utf-8")
    with pytest.raises(InputError, match=r"wrong\.json: schema: attributes/0/action"):
        compile_profile(str(wrong))
    doc = load_profile_document("ra-xray")
    doc["general_rows"][2]["action"] = "pseudonymise"
    keep_private = tmp_path / "private.json"
    keep_private.write_text(json.dumps(doc), encoding="utf-8")
    with pytest.raises(InputError, match="private attributes are always removed"):
        compile_profile(str(keep_private))
