"""Leak check: every element of every output file against the identifying values of the originals (R-5.5, R-7.3).

``mmanno deid verify OUT --original IN`` is independent of the engine that wrote OUT: it reads
both sides with pydicom, so a mistake shared by the raw writer and its own checks still fails,
and it checks the output of any tool (the benchmark counts dicognito's and deid's leaks with it).

What counts as identifying (collected from every original DICOM file, sequences included, and
from ``identifying_values`` of any sample ``case.json`` below IN):

* ``name`` - every person name (PN) and its spellings: each component group, family and given
  name in both orders, with and without separators (``Wang^Xiaoming=王^小明`` gives
  ``wang xiaoming``, ``xiaoming wang``, ``wangxiaoming``, ``王小明`` ...);
* ``id`` - patient IDs, other patient IDs, issuer, study ID, accession numbers, admission and
  procedure-step identifiers;
* ``birth_date`` - in the forms ``YYYYMMDD``, ``YYYY-MM-DD``, ``YYYY.MM.DD``, ``YYYY/MM/DD``;
* ``institution`` / ``address`` / ``telephone`` - institution name, address and department,
  patient address and telephone;
* ``free_text`` - comments, histories, reasons and other free text;
* ``device`` - station name and device serial number (reported as *retained* instead of as a
  leak when the output's ``deid-record.json`` declares the Retain Device Identity option);
* ``uid`` - every instance UID of the originals (anything not defined by the standard).

Matching: a text value of the output leaks when it contains a token (case-folded, separators
collapsed) of at least 4 characters (6 for digits only, 2 for Chinese characters); shorter
identifying values are matched only when the whole value of the same attribute is equal. Numeric
value representations are not searched (a 6-digit study ID occurs by chance inside long
numbers), UIDs are compared whole, pixel data is not read (burned-in text is the record's
``burned_in_annotation`` list). A leak is reported with the output file, the tag path
(``(0008,1115)[0]>(0008,1199)[0]>(0008,1155)``), the category and the attribute of the original
it matches - never with the value.
"""

from __future__ import annotations

import json
import os
import re
import time
import unicodedata
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Optional, Set, Tuple

import pydicom
from pydicom.dataset import Dataset

from ..admission.screening import screen_file
from ..dicom_series import iter_files
from ..errors import InputError
from ..jsonschemas import schema_id, validate_document

REPORT_SCHEMA = "leak-report"

#: Attributes whose values identify, by category (keywords; PN attributes are names wherever they are).
CATEGORY_KEYWORDS: Dict[str, Tuple[str, ...]] = {
    "id": ("PatientID", "OtherPatientIDs", "IssuerOfPatientID", "StudyID", "AccessionNumber", "AdmissionID",
           "MedicalRecordLocator", "RequestedProcedureID", "PerformedProcedureStepID", "ScheduledProcedureStepID",
           "FillerOrderNumberImagingServiceRequest", "PlacerOrderNumberImagingServiceRequest",
           "PatientInsurancePlanCodeSequence", "MilitaryRank", "ClinicalTrialSubjectID", "ServiceEpisodeID",
           "VisitComments", "OtherPatientIDsSequence", "ResponsiblePerson", "ResponsibleOrganization"),
    "birth_date": ("PatientBirthDate", "PatientBirthTime"),
    "institution": ("InstitutionName", "InstitutionAddress", "InstitutionalDepartmentName",
                    "InstitutionCodeSequence"),
    "address": ("PatientAddress", "CountryOfResidence", "RegionOfResidence", "CurrentPatientLocation",
                "PatientInstitutionResidence"),
    "telephone": ("PatientTelephoneNumbers", "PatientTelecomInformation"),
    "free_text": ("AdditionalPatientHistory", "PatientComments", "ImageComments", "StudyComments",
                  "RequestedProcedureComments", "ImagingServiceRequestComments", "InterpretationText",
                  "ReasonForStudy", "ReasonForTheRequestedProcedure", "ReasonForTheImagingServiceRequest",
                  "AdmittingDiagnosesDescription", "MedicalAlerts", "Allergies", "Occupation",
                  "PatientState", "SpecialNeeds", "DerivationDescription", "AcquisitionComments",
                  "CommentsOnThePerformedProcedureStep", "TextValue", "TextComments"),
    "device": ("StationName", "DeviceSerialNumber", "DetectorID", "GantryID", "GeneratorID", "PlateID",
               "CassetteID"),
}
#: case.json identifying_values keys -> category.
SAMPLE_CATEGORIES: Dict[str, str] = {
    "PatientName": "name", "PatientNamePinyin": "name", "PatientNameIdeographic": "name",
    "OtherPatientNames": "name", "ReferringPhysicianName": "name", "PerformingPhysicianName": "name",
    "NameOfPhysiciansReadingStudy": "name", "OperatorsName": "name", "PatientID": "id", "IssuerOfPatientID": "id",
    "OtherPatientIDs": "id", "StudyID": "id", "AccessionNumber": "id", "PatientBirthDate": "birth_date",
    "PatientAddress": "address", "PatientTelephoneNumbers": "telephone", "InstitutionName": "institution",
    "InstitutionAddress": "institution", "InstitutionalDepartmentName": "institution",
    "StationName": "device", "DeviceSerialNumber": "device", "AdditionalPatientHistory": "free_text",
    "ImageComments": "free_text", "PrivatePatientNote": "free_text",
}
_KEYWORD_CATEGORY = {kw: cat for cat, kws in CATEGORY_KEYWORDS.items() for kw in kws}
_TEXT_VRS = {"AE", "AS", "CS", "DA", "DT", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UR", "UT"}
_BINARY_VRS = {"OB", "OW", "UN", "OD", "OF", "OL", "OV"}
_STANDARD_UID_ROOT = "1.2.840.10008."
_CLASS_UID_KEYWORDS = {"SOPClassUID", "MediaStorageSOPClassUID", "TransferSyntaxUID", "ImplementationClassUID",
                       "ReferencedSOPClassUID", "ReferencedSOPClassUIDInFile", "CodingSchemeUID",
                       "ReferencedTransferSyntaxUIDInFile", "AffectedSOPClassUID", "RequestedSOPClassUID",
                       "ContextUID", "MappingResourceUID", "SOPClassesSupported", "RelatedGeneralSOPClassUID",
                       "OriginalSpecializedSOPClassUID"}
_SEPARATORS = re.compile(r"[\s\^=,;:/\\._\-()'\"]+")
_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")


def normalise(text: str) -> str:
    """Case-folded NFKC text with every run of separators (space ^ = , . / - ...) as one space."""
    return _SEPARATORS.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


def compact(text: str) -> str:
    return normalise(text).replace(" ", "")


def _searchable(token: str) -> bool:
    core = token.replace(" ", "")
    if _CJK.search(core):
        return len(core) >= 2
    if core.isdigit():
        return len(core) >= 6
    return len(core) >= 4


@dataclass
class IdentifyingValues:
    """What must not appear in the output: tokens by category, exact values by keyword, UIDs."""

    tokens: Dict[str, Tuple[str, str]] = field(default_factory=dict)  # compact token -> (category, attribute)
    exact: Dict[str, Set[str]] = field(default_factory=dict)  # keyword -> normalised whole values
    uids: Set[str] = field(default_factory=set)
    n_files: int = 0
    _pattern: Optional[re.Pattern[str]] = None

    def add(self, category: str, attribute: str, value: str) -> None:
        value = str(value).strip()
        if not value:
            return
        self.exact.setdefault(attribute, set()).add(normalise(value))
        variants = {normalise(value)}
        if category == "name":
            for group in value.split("="):
                parts = [p for p in group.split("^") if p.strip()]
                if not parts:
                    continue
                variants.add(normalise(" ".join(parts)))
                if len(parts) >= 2:
                    variants.add(normalise(" ".join([parts[1], parts[0]])))
        if category == "birth_date" and re.fullmatch(r"\d{8}", value):
            y, m, d = value[:4], value[4:6], value[6:8]
            variants |= {f"{y}-{m}-{d}", f"{y}.{m}.{d}", f"{y}/{m}/{d}"}
        for variant in variants:
            token = variant.replace(" ", "")
            if _searchable(token):
                self.tokens.setdefault(token, (category, attribute))
        self._pattern = None

    def pattern(self) -> Optional[re.Pattern[str]]:
        if self._pattern is None and self.tokens:
            ordered = sorted(self.tokens, key=len, reverse=True)
            self._pattern = re.compile("|".join(re.escape(t) for t in ordered))
        return self._pattern


def _walk(ds: Dataset, path: str = "") -> Iterable[Tuple[str, Any]]:
    for elem in ds:
        here = f"{path}>({elem.tag.group:04X},{elem.tag.element:04X})" if path else \
            f"({elem.tag.group:04X},{elem.tag.element:04X})"
        if elem.VR == "SQ":
            for i, item in enumerate(elem.value or []):
                yield from _walk(item, f"{here}[{i}]")
        else:
            yield here, elem


def _values(elem: Any) -> List[str]:
    value = elem.value
    if value is None:
        return []
    if isinstance(value, (bytes, bytearray)):
        return [bytes(value).decode("utf-8", "replace").strip("\x00 ")]
    if isinstance(value, (list, tuple, pydicom.multival.MultiValue)):
        return [str(v) for v in value]
    return [str(value)]


def collect_identifying_values(original: str, progress: Optional[Callable[[int, int], None]] = None
                               ) -> IdentifyingValues:
    """The identifying values of every DICOM file below ``original`` (and of sample manifests)."""
    found = IdentifyingValues()
    files = iter_files(original)
    for n, path in enumerate(files, 1):
        if os.path.basename(path) == "case.json":
            _add_manifest(found, path)
        elif screen_file(path).kind == "dicom":
            try:
                ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
            except Exception:  # an unreadable file has nothing to collect
                ds = None
            if ds is not None and len(ds):
                found.n_files += 1
                for _, elem in _walk(ds):
                    _collect(found, elem)
                meta = getattr(ds, "file_meta", None)
                if meta is not None:
                    for _, elem in _walk(meta):
                        _collect(found, elem)
        if progress is not None:
            progress(n, len(files))
    return found


def _collect(found: IdentifyingValues, elem: Any) -> None:
    keyword = elem.keyword or f"({elem.tag.group:04X},{elem.tag.element:04X})"
    vr = elem.VR
    if vr == "UI":
        if keyword in _CLASS_UID_KEYWORDS:
            return
        for value in _values(elem):
            uid = value.strip("\x00 ")
            if uid and not uid.startswith(_STANDARD_UID_ROOT):
                found.uids.add(uid)
        return
    if vr == "PN":
        for v in _values(elem):
            found.add("name", keyword, v)
        return
    # Private text is not collected as such (it holds model names, protocol names ...); the names
    # and IDs it repeats are found because every output element is searched for their tokens.
    category = _KEYWORD_CATEGORY.get(keyword)
    if category is not None and vr in _TEXT_VRS:
        for v in _values(elem):
            found.add(category, keyword, v)


def _add_manifest(found: IdentifyingValues, path: str) -> None:
    try:
        with open(path, encoding="utf-8") as fh:
            manifest = json.load(fh)
    except (OSError, json.JSONDecodeError):
        return
    values = manifest.get("identifying_values") if isinstance(manifest, dict) else None
    if not isinstance(values, dict):
        return
    for key, value in values.items():
        category = SAMPLE_CATEGORIES.get(key, "free_text")
        for v in value if isinstance(value, list) else [value]:
            found.add(category, key, str(v))


@dataclass
class Leak:
    file: str
    tag_path: str
    keyword: str
    category: str
    matches: str  # attribute of the original whose value appears

    def to_dict(self) -> Dict[str, str]:
        return {"file": self.file, "tag_path": self.tag_path, "keyword": self.keyword, "category": self.category,
                "matches": self.matches}


def _scan_text(found: IdentifyingValues, text: str) -> Optional[Tuple[str, str]]:
    pattern = found.pattern()
    if pattern is None or not text:
        return None
    match = pattern.search(compact(text))
    return found.tokens[match.group(0)] if match else None


def _check_element(found: IdentifyingValues, elem: Any) -> Optional[Tuple[str, str]]:
    vr = elem.VR
    keyword = elem.keyword or ""
    if vr == "UI":
        if keyword in _CLASS_UID_KEYWORDS:
            return None
        for uid in _values(elem):
            if uid.strip("\x00 ") in found.uids:
                return ("uid", "instance UID of the originals")
        return None
    if vr in _TEXT_VRS:
        values = _values(elem)
        exact = found.exact.get(keyword)
        if exact:
            for v in values:
                if normalise(v) in exact:
                    return (_KEYWORD_CATEGORY.get(keyword, "name" if vr == "PN" else "id"), keyword)
        if vr in ("DA", "DT", "TM", "AS", "CS") and not keyword.startswith("PatientBirth"):
            # dates: only whole birth dates count (a shifted study date may equal nothing else)
            for v in values:
                hit = _scan_text(found, v)
                if hit is not None and hit[0] == "birth_date":
                    return hit
            return None
        for v in values:
            hit = _scan_text(found, v)
            if hit is not None:
                return hit
        return None
    if vr in _BINARY_VRS and elem.tag != 0x7FE00010 and elem.tag.group & 0xFF00 != 0x6000:
        raw = elem.value if isinstance(elem.value, (bytes, bytearray)) else b""
        if raw and len(raw) <= 1 << 16:
            return _scan_text(found, bytes(raw).decode("utf-8", "ignore")) or _scan_text(
                found, bytes(raw).decode("latin-1"))
    return None


def verify_output(output: str, original: str, progress: Optional[Callable[[int, int], None]] = None,
                  found: Optional[IdentifyingValues] = None) -> Dict[str, Any]:
    """Scan every file below ``output`` for identifying values of ``original``; the leak report.

    Raises :class:`InputError` when either folder is missing or the originals hold no DICOM.
    """
    started = time.monotonic()
    for folder, name in ((output, "OUT"), (original, "--original")):
        if not os.path.exists(folder):
            raise InputError("no such file or folder", file=folder, field=name)
    if found is None:
        found = collect_identifying_values(original)
    if found.n_files == 0:
        raise InputError("no DICOM file among the originals: nothing to compare with", file=original,
                         field="--original")
    record = _read_record(output)
    retained_categories = set(record.get("retained_categories", [])) if record else set()
    files = iter_files(output)
    leaks: List[Leak] = []
    retained: List[Leak] = []
    n_elements = 0
    n_dicom = 0
    for n, path in enumerate(files, 1):
        rel = os.path.relpath(path, output) if os.path.isdir(output) else os.path.basename(path)
        ds = None
        if screen_file(path).kind == "dicom":
            try:
                ds = pydicom.dcmread(path, force=True, defer_size=1 << 20)
            except Exception:  # scanned as text below
                ds = None
        if ds is not None and len(ds) and "SOPClassUID" in ds:
            n_dicom += 1
            sources = [_walk(getattr(ds, "file_meta", Dataset())), _walk(ds)]
            for walker in sources:
                for tag_path, elem in walker:
                    n_elements += 1
                    hit = _check_element(found, elem)
                    if hit is not None:
                        leak = Leak(rel, tag_path, elem.keyword or "private", hit[0], hit[1])
                        (retained if hit[0] in retained_categories else leaks).append(leak)
        else:  # JSON records, logs, anything else: searched as text
            try:
                with open(path, "rb") as fh:
                    text = fh.read(32 << 20).decode("utf-8", "ignore")
            except OSError:
                text = ""
            hit = _scan_text(found, text)
            uid_hit = next((u for u in found.uids if u in text), None)
            if hit is not None:
                leaks.append(Leak(rel, "(file text)", "", hit[0], hit[1]))
            elif uid_hit is not None:
                leaks.append(Leak(rel, "(file text)", "", "uid", "instance UID of the originals"))
        if progress is not None:
            progress(n, len(files))
    by_category: Dict[str, int] = {}
    for leak in leaks:
        by_category[leak.category] = by_category.get(leak.category, 0) + 1
    report = {
        "schema": schema_id(REPORT_SCHEMA),
        "output_files": len(files),
        "output_dicom_files": n_dicom,
        "elements_scanned": n_elements,
        "original_files": found.n_files,
        "identifying_tokens": len(found.tokens),
        "original_uids": len(found.uids),
        "leaks": [leak.to_dict() for leak in leaks],
        "n_leaks": len(leaks),
        "leaks_by_category": dict(sorted(by_category.items())),
        "retained_by_declared_option": [leak.to_dict() for leak in retained],
        "record_found": record is not None,
        "passed": not leaks,
        "duration_s": round(time.monotonic() - started, 3),
    }
    validate_document(report, REPORT_SCHEMA)
    return report


def _read_record(output: str) -> Optional[Dict[str, Any]]:
    path = os.path.join(output, "deid-record.json")
    if not os.path.isfile(path):
        return None
    from ..jsonschemas import read_json

    record: Dict[str, Any] = read_json(path, "deid-record")
    return record


def compare_series(original: str, output: str) -> Dict[str, Any]:
    """Every image series of ``original`` has a series in ``output`` with the same geometry
    (within 1e-6 mm) and bit-identical voxels (paired by voxel checksum: no key needed)."""
    import hashlib

    import numpy as np

    from ..dicom_series import read_volume, scan_dicom

    def signatures(root: str) -> List[Dict[str, Any]]:
        out = []
        for series in scan_dicom(root).series:
            voxels = read_volume(series).voxels
            out.append({"modality": series.modality, "shape": list(series.geometry.shape),
                        "geometry": series.geometry, "n_files": series.n_files,
                        "sha256": hashlib.sha256(np.ascontiguousarray(voxels).tobytes()).hexdigest(),
                        "dtype": str(voxels.dtype)})
        return out

    before, after = signatures(original), signatures(output)
    pairs: List[Dict[str, Any]] = []
    unmatched: List[Dict[str, Any]] = []
    for b in before:
        match = next((a for a in after if a["sha256"] == b["sha256"] and a["dtype"] == b["dtype"]
                      and a["geometry"].max_corner_distance_mm(b["geometry"]) <= 1e-6), None)
        entry = {"modality": b["modality"], "shape": b["shape"], "n_files": b["n_files"], "matched": match is not None}
        (pairs if match is not None else unmatched).append(entry)
    return {"original_series": len(before), "output_series": len(after), "matched": len(pairs),
            "unmatched": unmatched, "passed": not unmatched and len(before) == len(after)}
