"""De-identification end to end (R-5.1, R-5.5, R-6.4, R-7.3): every sample kind and RT Structure
Sets come out with zero leaks, the same geometry and voxels, resolvable references, keyed and
reproducible pseudonyms, a private registry, an operations log without identifying values, and
inputs that were never touched."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import stat
from pathlib import Path
from typing import Any, Dict, List, Tuple

import numpy as np
import pydicom
import pytest

from MultiModalAnnotationLib.cli import main
from RTSSBridgeLib.deid import batch as batch_module
from RTSSBridgeLib.deid.batch import deidentify_folder
from RTSSBridgeLib.deid.engine import FileDeidentifier
from RTSSBridgeLib.deid.keys import Keyring, generate_key_file, read_key_file
from RTSSBridgeLib.deid.profile import compile_profile
from RTSSBridgeLib.deid.registry import read_operations
from RTSSBridgeLib.deid.verify import collect_identifying_values, compact, compare_series, verify_output
from RTSSBridgeLib.dicom_series import read_volume, scan_dicom
from RTSSBridgeLib.errors import InputError
from RTSSBridgeLib.jsonschemas import validate_document
from RTSSBridgeLib.uids import keyed_uid

from .deid_fixtures import (
    BIG,
    DEFLATED,
    EXPLICIT,
    IMPLICIT,
    PLANTED,
    file_bytes,
    identified_dataset,
    read_tree,
    rtss_for,
    rtss_resolution_problems,
    save,
)

TESTDATA = Path(__file__).resolve().parents[1].parent / "shared" / "testdata"
SAMPLE_OPTIONS: Dict[str, Dict[str, Any]] = {
    "ct-chest": {"slices": 24}, "mr-brain-mets": {"slices": 24}, "pet-ct": {"slices": 24},
    "us-thyroid": {}, "xray-ra": {},
}
PROFILE_OF = {"mr-brain-mets": "brain-mets-mr", "xray-ra": "ra-xray"}


@pytest.fixture(scope="module")
def key_file(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("keys") / "deid.key"
    generate_key_file(str(path))
    return str(path)


def digest_tree(root: Path) -> Dict[str, Tuple[str, int]]:
    return {str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mode)
            for p in sorted(root.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------ every sample kind
@pytest.mark.parametrize("kind", list(SAMPLE_OPTIONS))
@pytest.mark.parametrize("profile", ["basic", "seed"])
def test_every_sample_kind_has_zero_leaks_and_the_same_images(kind: str, profile: str, sample_case: Any,
                                                             key_file: str, tmp_path: Path) -> None:
    """R-5.5, R-7.3: de-identified output of each sample kind passes the leak check with zero
    leaks (the planted identifying_values of case.json and every identifying attribute of the
    originals), loads with the same geometry and bit-identical voxels, and the input is untouched."""
    case = sample_case(kind, **SAMPLE_OPTIONS[kind])
    name = PROFILE_OF.get(kind, "basic") if profile == "seed" else "basic"
    if profile == "seed" and kind not in PROFILE_OF:
        name = "basic"
        options = ["retain_longitudinal_modified_dates", "retain_patient_characteristics"]
    else:
        options = []
    before = digest_tree(case.root)
    out = tmp_path / "out"
    record = deidentify_folder(str(case.root), str(out), name, key_file, options=options, workers=2)
    assert digest_tree(case.root) == before, "the input was modified"
    structure_sets = json.loads(case.manifest.read_text(encoding="utf-8")).get("structure_sets", [])
    assert record["counts"]["written"] == sum(s.n_files for s in case.series) + len(structure_sets)
    report = verify_output(str(out), str(case.root))
    assert report["n_leaks"] == 0, report["leaks"][:5]
    assert report["identifying_tokens"] > 20 and report["original_uids"] > 0
    images = compare_series(str(case.root), str(out))
    assert images["passed"] and images["matched"] == images["original_series"] >= 1
    for ds in read_tree(out).values():
        assert ds.PatientIdentityRemoved == "YES"
        assert ds.DeidentificationMethodCodeSequence[0].CodeValue == "113100"
        assert not [e for e in ds.iterall() if e.tag.is_private]
        assert bytes(ds.preamble or b"\0" * 128) == b"\0" * 128


def test_voxels_and_geometry_are_bit_identical_series_by_series(sample_case: Any, key_file: str,
                                                                tmp_path: Path) -> None:
    """R-7.3: pixel data is copied, never decoded: each de-identified series (paired by keyed UID)
    has the original's geometry and voxels exactly."""
    case = sample_case("mr-brain-mets", slices=24)
    out = tmp_path / "out"
    deidentify_folder(str(case.root), str(out), "brain-mets-mr", key_file)
    key = read_key_file(key_file)
    after = {s.series_uid: s for s in scan_dicom(str(out)).series}
    for s in scan_dicom(str(case.root)).series:
        twin = after[keyed_uid(key, s.series_uid)]
        assert twin.geometry.max_corner_distance_mm(s.geometry) == 0.0
        assert np.array_equal(read_volume(twin).voxels, read_volume(s).voxels)
        assert twin.frame_of_reference_uid == keyed_uid(key, s.frame_of_reference_uid)


# ------------------------------------------------------------------------------ RT Structure Sets
@pytest.fixture(scope="module")
def rtss_case(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generated MR series of 6 slices plus an RT Structure Set referencing it (implicit VR)."""
    root = tmp_path_factory.mktemp("rtss-case")
    images = [identified_dataset("MR", k) for k in range(6)]
    for k, ds in enumerate(images):
        save(ds, root / "MR" / f"im{k}.dcm")
    save(rtss_for(images), root / "RTSS" / "rtss.dcm")
    return root


@pytest.mark.parametrize("profile", ["brain-mets-mr", "basic"])
def test_rtss_still_resolves_to_its_images(rtss_case: Path, key_file: str, tmp_path: Path, profile: str) -> None:
    """R-7.3 / seed 002 table 5-2: after de-identification every UID the structure set references
    (frame of reference, study, series, each contour image) is the pseudonym of the image it
    referenced, so the RTSS resolves to the de-identified series; zero leaks."""
    before = read_tree(rtss_case)
    assert rtss_resolution_problems(before["RTSS/rtss.dcm"], [v for k, v in before.items() if k.startswith("MR")]) == []
    out = tmp_path / "out"
    deidentify_folder(str(rtss_case), str(out), profile, key_file)
    after = list(read_tree(out).values())
    rtss = [d for d in after if d.Modality == "RTSTRUCT"]
    images = [d for d in after if d.Modality == "MR"]
    assert len(rtss) == 1 and len(images) == 6
    assert rtss_resolution_problems(rtss[0], images) == []
    assert verify_output(str(out), str(rtss_case))["n_leaks"] == 0
    if profile == "brain-mets-mr":  # table 5-2 keeps these; section 3.2 keeps the ROI names
        assert rtss[0].StructureSetTime == "101010" and rtss[0].SoftwareVersions == "11.0"
        assert [r.ROIName for r in rtss[0].StructureSetROISequence] == ["R_lat_temp", "L_frontal"]
        assert rtss[0].StructureSetLabel == "ROIs in axC"


@pytest.mark.parametrize("folder", ["rtutils_mock", "cheese_raystation"])
def test_real_rtss_files_resolve_after_deidentification(folder: str, key_file: str, tmp_path: Path) -> None:
    """Real RTSS files (rt-utils, RayStation) with their CT slices: references resolve to the
    de-identified CT exactly as they resolved before, and nothing identifying is left."""
    source = TESTDATA / folder
    if not source.is_dir():
        pytest.fail(f"shared test data missing: {source}")
    src = tmp_path / "in"
    src.mkdir()
    for f in source.glob("*.dcm"):
        if "reference" not in f.name and "oriented" not in f.name:
            shutil.copy(f, src / f.name)
    before = read_tree(src)
    rt_before = next(d for d in before.values() if d.Modality == "RTSTRUCT")
    ct_before = [d for d in before.values() if d.Modality == "CT"]
    out = tmp_path / "out"
    deidentify_folder(str(src), str(out), "basic", key_file)
    after = read_tree(out)
    rt_after = next(d for d in after.values() if d.Modality == "RTSTRUCT")
    ct_after = [d for d in after.values() if d.Modality == "CT"]
    # the same references that resolved before resolve after (the cheese RTSS references 144 CT
    # slices of which 6 are present: the unresolved ones stay unresolved, none more)
    before_problems = sorted(rtss_resolution_problems(rt_before, ct_before))
    assert sorted(rtss_resolution_problems(rt_after, ct_after)) == before_problems
    key = read_key_file(key_file)
    ref = rt_after.ReferencedFrameOfReferenceSequence[0]
    original_frame = rt_before.ReferencedFrameOfReferenceSequence[0].FrameOfReferenceUID
    assert ref.FrameOfReferenceUID == keyed_uid(key, original_frame)
    assert verify_output(str(out), str(src))["n_leaks"] == 0


# ------------------------------------------------------------------------------ keys and pseudonyms
def _pseudonyms(root: Path) -> Dict[str, Any]:
    tree = read_tree(root)
    return {"patient": sorted({str(d.PatientID) for d in tree.values()}),
            "uids": sorted({str(d.SOPInstanceUID) for d in tree.values()}),
            "studies": sorted({str(d.StudyInstanceUID) for d in tree.values()}),
            "dates": sorted({str(d.StudyDate) for d in tree.values()}),
            "files": sorted(tree)}


def test_same_key_same_pseudonyms_different_key_different(sample_case: Any, key_file: str, tmp_path: Path) -> None:
    """R-6.4, R-7.3: two runs with the same key give byte-identical files under the same names
    (pseudonyms, UIDs, date offsets); another key gives other pseudonyms for every identifier."""
    case = sample_case("xray-ra")
    first, second, third = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    deidentify_folder(str(case.root), str(first), "ra-xray", key_file)
    deidentify_folder(str(case.root), str(second), "ra-xray", key_file)
    other = tmp_path / "other.key"
    generate_key_file(str(other))
    deidentify_folder(str(case.root), str(third), "ra-xray", str(other))
    a, b, c = _pseudonyms(first), _pseudonyms(second), _pseudonyms(third)
    assert a == b
    files_a = {p.relative_to(first): p.read_bytes() for p in first.rglob("*.dcm")}
    files_b = {p.relative_to(second): p.read_bytes() for p in second.rglob("*.dcm")}
    assert files_a == files_b
    assert not set(a["patient"]) & set(c["patient"])
    assert not set(a["uids"]) & set(c["uids"]) and not set(a["studies"]) & set(c["studies"])
    assert a["files"] != c["files"]


def test_pseudonyms_are_consistent_across_a_case(sample_case: Any, key_file: str, tmp_path: Path) -> None:
    """R-7.3: one patient keeps one pseudonym, one date offset and one study UID across all series
    of a case (T1W, T2W, T1W+C), and studies split across hand and foot exams keep their link."""
    case = sample_case("mr-brain-mets", slices=24)
    out = tmp_path / "out"
    deidentify_folder(str(case.root), str(out), "brain-mets-mr", key_file)
    tree = read_tree(out)
    assert len({str(d.PatientID) for d in tree.values()}) == 1
    assert len({str(d.PatientName) for d in tree.values()}) == 1
    assert len({str(d.StudyInstanceUID) for d in tree.values()}) == 1
    assert len({str(d.StudyDate) for d in tree.values()}) == 1
    # T1W, T2W, T1W+C and the lesion RT Structure Set (its own series)
    assert len({str(d.SeriesInstanceUID) for d in tree.values()}) == 4
    rtss = [d for d in tree.values() if d.Modality == "RTSTRUCT"]
    assert len(rtss) == 1 and rtss[0].StudyInstanceUID == next(iter(tree.values())).StudyInstanceUID
    ra = sample_case("xray-ra")
    ra_out = tmp_path / "ra"
    deidentify_folder(str(ra.root), str(ra_out), "ra-xray", key_file)
    accessions = sorted(str(d.AccessionNumber) for d in read_tree(ra_out).values())
    assert [a[:3] for a in accessions] == ["RAF", "RAH"]  # hand and foot of one case stay a pair


# ------------------------------------------------------------------------------ registry and log
def test_registry_is_private_and_the_log_and_record_carry_no_identifying_value(sample_case: Any, key_file: str,
                                                                               tmp_path: Path) -> None:
    """R-6.4.2: the mapping real ID -> pseudonym is written only to the private folder (mode 0700,
    files 0600), outside the output; the output's record and the operations log hold counts and
    pseudonyms only (scanned with the leak check's own tokens)."""
    case = sample_case("us-thyroid")
    out = tmp_path / "out"
    private = tmp_path / "vault"
    result = deidentify_folder(str(case.root), str(out), "basic", key_file, private_folder=str(private))
    manifest = json.loads(case.manifest.read_text(encoding="utf-8"))
    registry = json.loads((private / "registry.json").read_text(encoding="utf-8"))
    assert registry["patients"][0]["patient_id"] == manifest["identifying_values"]["PatientID"]
    assert registry["patients"][0]["pseudonym"] == result["cases"][0]["case_id"]
    assert registry["series"][0]["series_id"].startswith(result["cases"][0]["case_id"])
    if os.name == "posix":
        assert stat.S_IMODE(private.stat().st_mode) == 0o700
        for name in ("registry.json", "operations.jsonl"):
            assert stat.S_IMODE((private / name).stat().st_mode) == 0o600
    assert not list(out.rglob("registry.json"))
    operations = read_operations(str(private))  # validated against deid-operation
    assert operations[-1]["operation"] == "deidentify" and operations[-1]["counts"]["written"] == 1
    validate_document(registry, "pseudonym-registry")
    validate_document(json.loads((out / "deid-record.json").read_text(encoding="utf-8")), "deid-record")
    found = collect_identifying_values(str(case.root))
    for text in ((private / "operations.jsonl").read_text(encoding="utf-8"),
                 (out / "deid-record.json").read_text(encoding="utf-8")):
        for token in found.tokens:
            assert token not in text.casefold().replace(" ", "")
        assert str(case.root) not in text
    for uid in found.uids:
        assert uid not in (out / "deid-record.json").read_text(encoding="utf-8")


def test_registry_refuses_another_key(sample_case: Any, key_file: str, tmp_path: Path) -> None:
    """R-6.4: one registry belongs to one key (pseudonyms of two keys are never mixed)."""
    case = sample_case("us-thyroid")
    private = tmp_path / "vault"
    deidentify_folder(str(case.root), str(tmp_path / "a"), "basic", key_file, private_folder=str(private))
    deidentify_folder(str(case.root), str(tmp_path / "b"), "basic", key_file, private_folder=str(private))
    assert len(json.loads((private / "registry.json").read_text(encoding="utf-8"))["runs"]) == 2
    other = tmp_path / "other.key"
    generate_key_file(str(other))
    with pytest.raises(InputError, match="the registry belongs to the key with fingerprint"):
        deidentify_folder(str(case.root), str(tmp_path / "c"), "basic", str(other), private_folder=str(private))
    assert not (tmp_path / "c").exists()


def test_pseudonym_collision_stops_the_run(tmp_path: Path, key_file: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """R-6.4: unique case identifiers - two patients with one pseudonym stop the run, nothing written."""
    src = tmp_path / "in"
    save(identified_dataset(patient={"PatientID": "P1"}), src / "a.dcm")
    save(identified_dataset(index=1, patient={"PatientID": "P2"}), src / "b.dcm")
    monkeypatch.setattr(Keyring, "pseudonym", lambda self, purpose, value, fmt, max_length=64: "SAME")
    with pytest.raises(InputError, match="pseudonym collision"):
        deidentify_folder(str(src), str(tmp_path / "out"), "basic", key_file)
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------ atomic, inputs, refusals
def test_output_is_atomic(sample_case: Any, key_file: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Outputs are atomic: a failure after files were written leaves no output folder and no
    temporary folder behind."""
    case = sample_case("xray-ra")

    def boom(*args: Any, **kwargs: Any) -> Dict[str, Any]:
        raise RuntimeError("disk full")

    monkeypatch.setattr(batch_module, "build_record", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        deidentify_folder(str(case.root), str(tmp_path / "out"), "ra-xray", key_file)
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_screened_files_are_not_copied(tmp_path: Path, key_file: str) -> None:
    """R-6.3.3 at de-identification: non-DICOM files are not copied, a polyglot is refused, and a
    polyglot preamble never reaches an output file (every output preamble is zeroed)."""
    src = tmp_path / "in"
    path = save(identified_dataset(), src / "ok.dcm")
    data = path.read_bytes()
    (src / "evil.dcm").write_bytes(b"MZ" + data[2:])
    (src / "notes.txt").write_text("Chen Meiling", encoding="utf-8")
    result = deidentify_folder(str(src), str(tmp_path / "out"), "basic", key_file)
    assert result["counts"]["written"] == 1
    assert result["counts"]["skipped_by_reason"] == {"NOT_DICOM": 1, "POLYGLOT_PREAMBLE": 1}
    (written,) = (tmp_path / "out").rglob("*.dcm")
    assert written.read_bytes()[:128] == b"\0" * 128


def test_burned_in_annotation_is_flagged(tmp_path: Path, key_file: str) -> None:
    """R-7.3: objects with Burned In Annotation YES, or without it on ultrasound/secondary capture,
    are listed in the record (pixels are not cleaned); the 'exclude' policy leaves them out."""
    src = tmp_path / "in"
    yes = identified_dataset(index=0)
    yes.BurnedInAnnotation = "YES"
    save(yes, src / "yes.dcm")
    us = identified_dataset("MR", index=1)
    us.Modality = "US"
    del us.BurnedInAnnotation
    save(us, src / "us.dcm")
    save(identified_dataset(index=2), src / "no.dcm")
    result = deidentify_folder(str(src), str(tmp_path / "out"), "basic", key_file)
    flags = sorted(b["flag"] for b in result["burned_in_annotation"])
    assert flags == ["UNKNOWN", "YES"]
    doc = json.loads(Path(compile_profile.__globals__["profile_path"]("basic")).read_text(encoding="utf-8"))
    doc["burned_in_annotation"] = "exclude"
    strict = tmp_path / "strict.json"
    strict.write_text(json.dumps(doc), encoding="utf-8")
    result = deidentify_folder(str(src), str(tmp_path / "strict-out"), str(strict), key_file)
    assert result["counts"]["written"] == 1
    assert result["counts"]["skipped_by_reason"] == {"BURNED_IN_ANNOTATION": 2}


@pytest.mark.parametrize("setup,match", [
    ("no-key", "a key is needed"),
    ("short-key", "key has 5 bytes; at least 16"),
    ("missing-key", "no such key file"),
    ("missing-input", "no such file or folder"),
    ("output-not-empty", "output folder exists and is not empty"),
    ("output-inside-input", "must not lie inside the input folder"),
    ("registry-inside-output", "must be outside the de-identified output"),
    ("nothing-dicom", "no DICOM object could be de-identified"),
])
def test_invalid_deidentification_inputs(setup: str, match: str, tmp_path: Path, key_file: str) -> None:
    """Bad input gets one line naming the file or field and the rule; nothing is written."""
    src = tmp_path / "in"
    save(identified_dataset(), src / "a.dcm")
    out = tmp_path / "out"
    kwargs: Dict[str, Any] = {"key_file": key_file}
    source = str(src)
    if setup == "no-key":
        kwargs = {}
    elif setup == "short-key":
        (tmp_path / "short.key").write_bytes(b"12345")
        kwargs = {"key_file": str(tmp_path / "short.key")}
    elif setup == "missing-key":
        kwargs = {"key_file": str(tmp_path / "nope.key")}
    elif setup == "missing-input":
        source = str(tmp_path / "nope")
    elif setup == "output-not-empty":
        out.mkdir()
        (out / "x").write_text("x")
    elif setup == "output-inside-input":
        out = src / "out"
    elif setup == "registry-inside-output":
        kwargs["private_folder"] = str(out / "vault")
    elif setup == "nothing-dicom":
        source = str(tmp_path / "text")
        os.makedirs(source)
        Path(source, "a.txt").write_text("hello")
    with pytest.raises(InputError, match=match):
        deidentify_folder(source, str(out), "basic", **kwargs)


def test_key_file_is_owner_only_and_never_overwritten(tmp_path: Path) -> None:
    """The key is secret: written with mode 0600, never overwritten, read back as the same bytes."""
    path = tmp_path / "k.key"
    fingerprint = generate_key_file(str(path))
    if os.name == "posix":
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert Keyring(read_key_file(str(path))).fingerprint == fingerprint
    with pytest.raises(InputError, match="key file exists already"):
        generate_key_file(str(path))


# ------------------------------------------------------------------------------ encodings
@pytest.mark.parametrize("syntax", [IMPLICIT, EXPLICIT, DEFLATED, BIG])
def test_every_transfer_syntax_gives_the_same_deidentified_data_set(syntax: str) -> None:
    """The raw engine reads implicit and explicit VR, little and big endian, and deflated data sets;
    the de-identified result is the same data set whatever the encoding (and stays in it)."""
    engine = FileDeidentifier(compile_profile("brain-mets-mr"), Keyring(b"k" * 32))
    reference = pydicom.dcmread(io.BytesIO(b"".join(
        bytes(c) for c in engine.deidentify("r", file_bytes(identified_dataset(), EXPLICIT))[0])))
    chunks, _ = engine.deidentify("x", file_bytes(identified_dataset(), syntax))
    result = pydicom.dcmread(io.BytesIO(b"".join(bytes(c) for c in chunks)))
    assert str(result.file_meta.TransferSyntaxUID) == syntax
    for elem in reference:
        if elem.tag == 0x7FE00010:
            continue
        assert elem.tag in result, elem
        assert result[elem.tag].value == elem.value, elem
    assert set(result.keys()) == set(reference.keys())
    if syntax != BIG:
        assert np.array_equal(result.pixel_array, reference.pixel_array)


def test_compressed_pixel_data_is_streamed_untouched(tmp_path: Path) -> None:
    """Encapsulated (RLE) pixel data is copied fragment for fragment and decodes to the same pixels."""
    from pydicom.uid import RLELossless

    ds = identified_dataset(rows=16, columns=16)
    ds.compress(RLELossless)
    data = file_bytes(ds)
    engine = FileDeidentifier(compile_profile("basic"), Keyring(b"k" * 32))
    result = pydicom.dcmread(io.BytesIO(b"".join(bytes(c) for c in engine.deidentify("x", data)[0])))
    assert str(result.file_meta.TransferSyntaxUID) == str(RLELossless)
    assert result.PixelData == pydicom.dcmread(io.BytesIO(data)).PixelData
    assert np.array_equal(result.pixel_array, ds.pixel_array)


def test_sequence_encoded_as_un_is_still_deidentified(monkeypatch: pytest.MonkeyPatch) -> None:
    """A public sequence written with VR UN (implicit encoding inside, PS3.5 6.2.2) is parsed: the
    UIDs and names inside are handled like any other."""
    from pydicom.dataelem import RawDataElement
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset
    from pydicom.tag import Tag

    monkeypatch.setattr(pydicom.config, "replace_un_with_known_vr", False)

    ds = identified_dataset()
    inner = pydicom.Dataset()
    inner.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
    inner.ReferencedSOPInstanceUID = "1.3.6.1.4.1.9590.100.1.2.555"
    item = DicomBytesIO()
    item.is_little_endian, item.is_implicit_VR = True, True
    write_dataset(item, inner)
    body = item.getvalue()
    raw = b"\xfe\xff\x00\xe0" + len(body).to_bytes(4, "little") + body
    tag = Tag(0x00082112)  # Source Image Sequence, written as UN
    ds._dict[tag] = RawDataElement(tag, "UN", len(raw), raw, 0, False, True)
    engine = FileDeidentifier(compile_profile("basic"), Keyring(b"k" * 32))
    data = engine.deidentify("x", file_bytes(ds, EXPLICIT))[0]
    out = b"".join(bytes(c) for c in data)
    assert b"1.3.6.1.4.1.9590.100.1.2.555" not in out
    assert keyed_uid(b"k" * 32, "1.3.6.1.4.1.9590.100.1.2.555").encode() in out


def test_every_identifier_of_a_rich_object_is_gone() -> None:
    """Every planted identifying value (names, IDs, dates of birth, institution, free text) is gone
    from the bytes of the output (searched raw, whatever the attribute)."""
    engine = FileDeidentifier(compile_profile("basic"), Keyring(b"k" * 32))
    data = b"".join(bytes(c) for c in engine.deidentify("x", file_bytes(identified_dataset()))[0])
    for keyword, value in PLANTED.items():
        for part in value.replace("^", "=").split("="):
            assert part.encode("utf-8") not in data, keyword


# ------------------------------------------------------------------------------ command line
def run(args: List[str], capsys: pytest.CaptureFixture[str]) -> Tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_deid_verify_keygen_profiles(sample_case: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """mmanno deid / deid verify / deid keygen / deid profiles: JSON output, exit codes, one-line errors."""
    case = sample_case("xray-ra")
    key = tmp_path / "k.key"
    code, out, _ = run(["deid", "keygen", str(key), "--json"], capsys)
    assert code == 0 and json.loads(out)["key_fingerprint"]
    code, out, _ = run(["deid", str(case.root), str(tmp_path / "out"), "--profile", "ra-xray", "--key", str(key),
                        "--json", "--quiet"], capsys)
    assert code == 0
    record = json.loads(out)
    assert record["counts"]["written"] == 2 and record["profile"]["name"] == "ra-xray"
    code, out, _ = run(["deid", "verify", str(tmp_path / "out"), "--original", str(case.root), "--images",
                        "--json", "--quiet"], capsys)
    assert code == 0
    report = json.loads(out)
    assert report["n_leaks"] == 0 and report["images"]["passed"]
    assert {r["keyword"] for r in report["retained_by_declared_option"]} == {"DeviceSerialNumber", "PlateID"}
    code, out, _ = run(["deid", "verify", str(case.root / "dicom"), "--original", str(case.root), "--quiet"], capsys)
    assert code == 1 and "LEAK name" in out
    code, out, _ = run(["deid", "profiles", "--json"], capsys)
    assert [p["name"] for p in json.loads(out)] == ["basic", "brain-mets-mr", "ra-xray"]
    code, _, err = run(["deid", str(case.root), str(tmp_path / "o2"), "--profile", "basic"], capsys)
    assert code == 2 and err.strip() == ("mmanno deid: error: --key KEYFILE is required (make one with "
                                         "'mmanno deid keygen KEYFILE')")
    code, _, err = run(["deid", str(case.root), str(tmp_path / "o3"), "--key", str(key)], capsys)
    assert code == 2 and "--profile NAME is required" in err
    code, _, err = run(["deid", "verify", str(tmp_path / "nope"), "--original", str(case.root)], capsys)
    assert code == 2 and "nope: OUT: no such file or folder" in err
    code, _, err = run(["deid", "keygen", str(key)], capsys)
    assert code == 2 and "key file exists already" in err
    with pytest.raises(SystemExit) as exc:
        main(["deid", "verify", str(tmp_path)])
    assert exc.value.code == 2


def test_demo_checks_deidentifies_and_loads_only_the_deidentified_copy(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """mmanno demo: admission check and de-identification run before loading; the report shows
    zero leaks and identical images, every later step reads the de-identified copy, and neither
    report carries an identifying value of the generated case."""
    code = main(["demo", "--kind", "xray-ra", "--out", str(tmp_path / "demo"), "--quiet"])
    out = capsys.readouterr().out
    assert code == 0, out
    report = json.loads((tmp_path / "demo" / "report.json").read_text(encoding="utf-8"))
    names = [c["check"] for c in report["checks"]]
    assert names[:4] == ["admission: no blocking finding", "de-identification: every image written",
                         "leak check: zero leaks", "de-identified images: same geometry and voxels"]
    assert report["intake"]["n_leaks"] == 0 and report["intake"]["deid_profile"] == "ra-xray"
    assert report["case"]["loaded_from"] == "deidentified"
    found = collect_identifying_values(str(tmp_path / "demo" / "case"))
    for name in ("report.json", "report.html"):
        text = (tmp_path / "demo" / name).read_text(encoding="utf-8")
        pattern = found.pattern()
        assert pattern is not None and pattern.search(compact(text)) is None, name
        assert not any(uid in text for uid in found.uids), name
    if os.name == "posix":
        assert stat.S_IMODE((tmp_path / "demo" / "private" / "demo.key").stat().st_mode) == 0o600
