"""De-identification of one DICOM file, element by element, from a compiled profile (R-7.3).

:class:`FileDeidentifier` parses a file's element headers (:mod:`.rawdicom`), decides the
action of every element at every nesting level (:mod:`.profile`), and writes a new file: a
zeroed preamble (a DICOM/executable polyglot preamble never survives), a fresh file meta group,
the transformed data set and the pixel data bytes exactly as they were (never decoded). Then it
adds Patient Identity Removed (0012,0062) = YES, De-identification Method (0012,0063), the
De-identification Method Code Sequence (0012,0064) and Longitudinal Temporal Information
Modified (0028,0303).

Rules applied to every object whatever the profile says: every private attribute (odd group,
private creators included) is removed; every UID that the standard does not define (not
``1.2.840.10008.*``, and not in a SOP Class attribute) becomes its keyed pseudonym, inside
sequences too, so an RT Structure Set's references still resolve to the pseudonymised images;
group lengths are dropped (they would be wrong).
"""

from __future__ import annotations

import hashlib
import io
import re
import zlib
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from ..errors import DicomError, InputError
from .keys import Keyring, transform_dates
from .profile import Act, CompiledProfile
from .rawdicom import (
    DEFLATED_LITTLE,
    EXPLICIT_LITTLE,
    IMPLICIT_LITTLE,
    UNDEFINED,
    DicomFile,
    Element,
    NeedMoreData,
    RawParseError,
    Writer,
    dictionary_vr,
    file_meta_bytes,
    is_known_tag,
)

#: Written in every output's file meta (Implementation Class UID is fixed for this software).
IMPLEMENTATION_CLASS_UID = "2.25.98071637394402755591934498862633414712"
IMPLEMENTATION_VERSION = "MMANNO_DEID_1"
#: UIDs in these attributes name classes, not instances: never pseudonymised.
CLASS_UID_TAGS = frozenset({
    0x00000002, 0x00000003,  # Affected / Requested SOP Class UID
    0x00020002, 0x00020010, 0x00020012,  # Media Storage SOP Class, Transfer Syntax, Implementation Class
    0x00041510, 0x00041512,  # Referenced SOP Class / Transfer Syntax UID in File
    0x00080016, 0x0008001A, 0x0008001B,  # SOP Class, Related General / Original Specialized SOP Class
    0x0008010C, 0x00080117, 0x00080118,  # Coding Scheme, Context, Mapping Resource UID
    0x00081150, 0x0008115A,  # Referenced SOP Class UID, SOP Classes Supported
})
_STANDARD_UID_ROOT = "1.2.840.10008."
_DATE_VRS = ("DA", "DT")
_TEXT_DUMMY: Dict[str, bytes] = {
    "AE": b"ANONYMOUS", "AS": b"000Y", "CS": b"ANONYMIZED", "DA": b"19000101", "DT": b"19000101000000",
    "DS": b"0", "IS": b"0", "LO": b"ANONYMIZED", "LT": b"ANONYMIZED", "PN": b"ANONYMIZED", "SH": b"ANONYMIZED",
    "ST": b"ANONYMIZED", "TM": b"000000", "UC": b"ANONYMIZED", "UT": b"ANONYMIZED", "UR": b"",
}
_MAX_LENGTH = {"AE": 16, "CS": 16, "LO": 64, "PN": 64, "SH": 16, "UI": 64}
#: Added by the de-identification; originals of these are replaced.
TAG_PATIENT_IDENTITY_REMOVED = 0x00120062
TAG_DEID_METHOD = 0x00120063
TAG_DEID_METHOD_CODES = 0x00120064
TAG_TEMPORAL_MODIFIED = 0x00280303
_ADDED = frozenset({TAG_PATIENT_IDENTITY_REMOVED, TAG_DEID_METHOD, TAG_DEID_METHOD_CODES, TAG_TEMPORAL_MODIFIED})
#: Objects whose pixels often carry burned-in text when Burned In Annotation is absent.
_BURN_IN_MODALITIES = frozenset({"US", "XA", "RF", "ES", "SC", "OT", "XC", "GM", "SM", "DOC", "IVUS", "OP"})
_SAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]")
#: A zeroed preamble and the DICM marker: whatever the input's preamble held is not copied.
_PREAMBLE = b"\0" * 128 + b"DICM"


@dataclass
class Outcome:
    """What happened to one input file (picklable; real identifiers only for the private registry)."""

    source: str
    written: bool
    reason: str = ""
    detail: str = ""
    output: str = ""  # relative to the output folder
    modality: str = ""
    patient_id: str = ""
    patient_name: str = ""
    patient_pseudonym: str = ""
    study_uid: str = ""
    study_pseudonym: str = ""
    accession: str = ""
    accession_pseudonym: str = ""
    series_uid: str = ""
    series_pseudonym: str = ""
    series_number: str = ""
    date_offset_days: int = 0
    burned_in: str = ""  # "", "YES" or "UNKNOWN"
    counts: Dict[str, int] = field(default_factory=dict)


class _Context:
    __slots__ = ("counts", "date_offset", "modality", "patient_name", "patient_pseudonym")

    def __init__(self) -> None:
        self.counts: Dict[str, int] = {}
        self.date_offset = 0
        self.modality = ""
        self.patient_pseudonym = ""
        self.patient_name = ""

    def count(self, what: str, n: int = 1) -> None:
        self.counts[what] = self.counts.get(what, 0) + n


def _text(buf: bytes, el: Element) -> bytes:
    return bytes(buf[el.value_offset:el.value_offset + el.length]).rstrip(b" \x00").lstrip(b" ")


def short_hash(text: str, n: int) -> str:
    """A stable non-identifying name part derived from a pseudonymised value."""
    return hashlib.sha256(text.encode("ascii")).hexdigest()[:n].upper()


class FileDeidentifier:
    """Applies one compiled profile with one key to files (one instance per worker process)."""

    def __init__(self, profile: CompiledProfile, keyring: Keyring) -> None:
        self.profile = profile
        self.keys = keyring
        self._method_value = "\\".join(profile.method_description).encode("ascii", "replace")

    # ------------------------------------------------------------------ one file
    def deidentify(self, path: str, data: bytes, file_size: Optional[int] = None) -> Tuple[List[Any], Outcome]:
        """The de-identified file as chunks (write them in order; the pixel data is a view of
        ``data``, not a copy) and the outcome. Raises :class:`DicomError` for a file that cannot be
        parsed even by pydicom's tolerant reader.

        With ``file_size`` larger than ``data``, ``data`` is the head of the file: when the only
        element beyond it is the final native pixel data, the last chunk is a
        :class:`~.rawdicom.SourceRange` the caller copies from the file; otherwise
        :class:`~.rawdicom.NeedMoreData` asks for the whole file.
        """
        try:
            dicom = DicomFile(path, data, file_size)
        except RawParseError:
            if file_size is not None and file_size > len(data):
                raise NeedMoreData() from None
            dicom = DicomFile(path, _reencode_with_pydicom(path, data))
        return self._deidentify(dicom, path)

    def _deidentify(self, dicom: DicomFile, path: str) -> Tuple[List[Any], Outcome]:
        buf = dicom.body
        out = Outcome(source=path, written=True)
        ctx = _Context()
        ctx.modality = dicom.text(0x00080060).upper()
        out.modality = ctx.modality
        sop_uid = dicom.text(0x00080018) or _meta_text(dicom, 0x00020003)
        sop_class = dicom.text(0x00080016) or _meta_text(dicom, 0x00020002)
        if not sop_uid:
            raise DicomError("no SOP Instance UID (0008,0018) in the data set or the file meta", file=path,
                             field="SOPInstanceUID")
        patient_el = dicom.find(0x00100020)
        patient = _text(buf, patient_el) if patient_el is not None and patient_el.length != UNDEFINED else b""
        name_el = dicom.find(0x00100010)
        name = _text(buf, name_el) if name_el is not None and name_el.length != UNDEFINED else b""
        birth = dicom.text(0x00100030).encode("latin-1")
        patient_key = patient if patient else b"name:" + name + b"|" + birth
        p = self.profile
        ctx.patient_pseudonym = self.keys.pseudonym("patient_id", patient_key, p.pseudonyms["patient_id"], 64)
        ctx.patient_name = p.patient_name_template.format(patient_id=ctx.patient_pseudonym)[:64]
        ctx.date_offset = self.keys.date_offset_days(patient_key, *p.shift_days)

        out.patient_id = patient.decode("latin-1")
        out.patient_name = name.decode("utf-8", "replace")
        out.patient_pseudonym = ctx.patient_pseudonym
        out.date_offset_days = ctx.date_offset
        out.study_uid = dicom.text(0x0020000D)
        out.study_pseudonym = self._uid(out.study_uid) if out.study_uid else ""
        out.series_uid = dicom.text(0x0020000E)
        out.series_pseudonym = self._uid(out.series_uid) if out.series_uid else ""
        out.series_number = dicom.text(0x00200011)
        accession_el = dicom.find(0x00080050)
        if accession_el is not None and accession_el.length not in (0, UNDEFINED):
            out.accession = _text(buf, accession_el).decode("latin-1")
        out.burned_in = self._burned_in(dicom, ctx.modality, sop_class)
        if out.burned_in and p.burned_in == "exclude":
            out.written = False
            out.reason = "BURNED_IN_ANNOTATION"
            out.detail = f"Burned In Annotation {out.burned_in}: excluded by the profile"
            return [], out

        w = Writer(dicom.explicit, dicom.little)
        additions = self._additions(dicom.explicit, dicom.little)
        next_add = 0
        for el in dicom.elements:
            while next_add < len(additions) and additions[next_add][0] < el.tag:
                w.raw(additions[next_add][1])
                next_add += 1
            if el.tag in _ADDED:
                continue
            self._element(el, buf, w, ctx)
        for _, chunk in additions[next_add:]:
            w.raw(chunk)
        body: List[Any] = w.finish()
        if dicom.transfer_syntax == DEFLATED_LITTLE:
            compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
            body = [compressor.compress(w.getvalue()) + compressor.flush()]
        new_sop = self._uid(sop_uid)
        meta = file_meta_bytes(sop_class or "1.2.840.10008.5.1.4.1.1.7", new_sop, dicom.transfer_syntax,
                               IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION)
        for key, n in ctx.counts.items():
            out.counts[key] = n
        if accession_el is not None and out.accession:
            out.accession_pseudonym = self.keys.pseudonym("accession", out.accession.encode("latin-1"),
                                                          p.pseudonyms["accession"], 16)
        case = _SAFE_NAME.sub("_", ctx.patient_pseudonym) or "case"
        study = "ST" + short_hash(out.study_pseudonym or new_sop, 8)
        number = re.sub(r"[^0-9]", "", out.series_number) or "0"
        modality = _SAFE_NAME.sub("_", ctx.modality) or "OT"
        series = f"{modality}_{number}_{short_hash(out.series_pseudonym or new_sop, 8)}"
        out.output = f"{case}/{study}/{series}/{short_hash(new_sop, 20)}.dcm"
        return [_PREAMBLE, meta, *body], out

    # ------------------------------------------------------------------ elements
    def _uid(self, value: str) -> str:
        return value if not value or value.startswith(_STANDARD_UID_ROOT) else self.keys.uid(value)

    def _map_uids(self, raw: bytes) -> bytes:
        values = raw.decode("latin-1").split("\\")
        return "\\".join(self._uid(v.strip(" \x00")) for v in values).encode("ascii", "replace")

    def _default(self, el: Element, vr: str) -> Act:
        if vr == "UI":
            return Act.PSEUDONYMISE
        if vr in _DATE_VRS:
            return self.profile.date_default
        if vr == "PN":
            return self.profile.person_name_default
        if not is_known_tag(el.tag):
            return self.profile.unknown_public
        return Act.KEEP

    def _element(self, el: Element, buf: bytes, w: Writer, ctx: _Context) -> None:
        tag = el.tag
        if tag & 0x00010000:  # private: every one goes, creators included
            ctx.count("private_removed")
            return
        if not tag & 0xFFFF or tag >> 16 == 0x0002:  # group lengths; file meta inside the body
            return
        vr = el.vr
        if vr == "UN" and el.items is None:
            known = dictionary_vr(tag)
            if known != "UN" and " " not in known:
                vr = known
        rule = self.profile.rule_for(tag, ctx.modality)
        if rule is None:
            act = self._default(el, vr)
            pseudonym = "other"
        else:
            act, pseudonym = rule.act, rule.pseudonym
        if vr == "UI" and act in (Act.KEEP, Act.PSEUDONYMISE, Act.CLEAN, Act.DUMMY) and el.length != UNDEFINED:
            if tag in CLASS_UID_TAGS:
                w.copy(buf, el)
                return
            w.element(tag, vr, self._map_uids(el.value(buf)))
            ctx.count("uids_pseudonymised")
            return
        if act == Act.KEEP:
            self._keep(el, buf, w, ctx)
        elif act == Act.REMOVE:
            ctx.count("removed")
        elif act == Act.BLANK:
            ctx.count("blanked")
            if el.items is not None:
                w.sequence_start(tag)
                w.sequence_end()
            else:
                w.header(tag, vr, 0)
        elif el.items is not None:  # dummy, pseudonymise, dates or clean of a sequence: item by item
            self._keep(el, buf, w, ctx)
        elif el.length == UNDEFINED:  # encapsulated data under a rule that would change it: drop it
            ctx.count("removed")
        elif act == Act.DUMMY:
            ctx.count("dummied")
            if vr in _DATE_VRS and self.profile.modifies_dates:
                self._date(el, buf, w, ctx, vr, self.profile.generalise)
            elif vr in _TEXT_DUMMY:
                w.element(tag, vr, _TEXT_DUMMY[vr])
            else:
                w.element(tag, vr, b"\0" * el.length)
        elif act == Act.PSEUDONYMISE:
            ctx.count("pseudonymised")
            if pseudonym == "patient_name" or (vr == "PN" and pseudonym == "other" and tag == 0x00100010):
                value = ctx.patient_name
            elif pseudonym == "patient_id":
                raw = _text(buf, el)
                value = self.keys.pseudonym("patient_id", raw, self.profile.pseudonyms["patient_id"],
                                            _MAX_LENGTH.get(vr, 64)) if raw else ""
            else:
                raw = _text(buf, el)
                kind = "accession" if pseudonym == "accession" else "other"
                value = self.keys.pseudonym(kind if kind == "accession" else f"other:{tag:08X}", raw,
                                            self.profile.pseudonyms[kind], _MAX_LENGTH.get(vr, 64)) if raw else ""
            w.element(tag, vr, value.encode("ascii"))
        elif act in (Act.SHIFT_DATE, Act.GENERALISE_DATE, Act.CLEAN):
            if vr in _DATE_VRS:
                generalise = self.profile.generalise if act != Act.SHIFT_DATE else None
                self._date(el, buf, w, ctx, vr, generalise)
            elif vr == "TM" or (act != Act.CLEAN and vr not in _TEXT_DUMMY):
                w.copy(buf, el)  # times are kept when dates move (PS3.15 E.3.6)
            else:
                ctx.count("removed")  # clean of free text: no cleaner, nothing unchecked is kept
        else:  # pragma: no cover - every Act is handled above
            raise AssertionError(act)

    def _keep(self, el: Element, buf: bytes, w: Writer, ctx: _Context) -> None:
        if el.items is None:
            w.copy(buf, el)
            return
        w.sequence_start(el.tag)
        for item in el.items:
            w.item_start()
            for child in item:
                self._element(child, buf, w, ctx)
            w.item_end()
        w.sequence_end()

    def _date(self, el: Element, buf: bytes, w: Writer, ctx: _Context, vr: str, generalise: Optional[str]) -> None:
        text, bad = transform_dates(_text(buf, el).decode("latin-1"), vr, ctx.date_offset, generalise)
        ctx.count("dates_generalised" if generalise else "dates_shifted")
        if bad:
            ctx.count("dates_unparsable_blanked", bad)
        w.element(el.tag, vr, text.encode("ascii"))

    # ------------------------------------------------------------------ additions
    def _additions(self, explicit: bool, little: bool) -> List[Tuple[int, bytes]]:
        p = self.profile
        out: List[Tuple[int, bytes]] = []

        def one(tag: int, vr: str, value: bytes) -> None:
            w = Writer(explicit, little)
            w.element(tag, vr, value)
            out.append((tag, w.getvalue()))

        one(TAG_PATIENT_IDENTITY_REMOVED, "CS", b"YES")
        one(TAG_DEID_METHOD, "LO", self._method_value)
        w = Writer(explicit, little)
        w.sequence_start(TAG_DEID_METHOD_CODES)
        for value, meaning in p.method_codes:
            w.item_start()
            w.element(0x00080100, "SH", value.encode("ascii"))
            w.element(0x00080102, "SH", b"DCM")
            w.element(0x00080104, "LO", meaning.encode("ascii"))
            w.item_end()
        w.sequence_end()
        out.append((TAG_DEID_METHOD_CODES, w.getvalue()))
        if "retain_longitudinal_full_dates" in p.options:
            temporal = b"UNMODIFIED"
        elif p.modifies_dates:
            temporal = b"MODIFIED"
        else:
            temporal = b"REMOVED"
        one(TAG_TEMPORAL_MODIFIED, "CS", temporal)
        return out

    @staticmethod
    def _burned_in(dicom: DicomFile, modality: str, sop_class: str) -> str:
        value = dicom.text(0x00280301).upper()
        if value == "YES":
            return "YES"
        if value == "NO":
            return ""
        if dicom.find(0x7FE00010) is None:
            return ""
        image_type = dicom.text(0x00080008).upper().split("\\")
        if modality in _BURN_IN_MODALITIES or "SECONDARY" in image_type or sop_class.startswith(
                "1.2.840.10008.5.1.4.1.1.7"):
            return "UNKNOWN"
        return ""


def _meta_text(dicom: DicomFile, tag: int) -> str:
    for el in dicom.meta:
        if el.tag == tag:
            return el.text(dicom.data)
    return ""


def _reencode_with_pydicom(path: str, data: bytes) -> bytes:
    """Fallback for files whose bytes break their declared encoding: pydicom's tolerant reader,
    then written again in the syntax the raw parser needs (explicit VR little endian, or the
    original syntax for compressed pixel data)."""
    import pydicom
    from pydicom.uid import UID

    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
        meta = getattr(ds, "file_meta", None)
        if meta is None or "TransferSyntaxUID" not in meta:
            from pydicom.dataset import FileMetaDataset

            meta = meta or FileMetaDataset()
            meta.TransferSyntaxUID = UID(IMPLICIT_LITTLE)
            ds.file_meta = meta
        ts = str(meta.TransferSyntaxUID)
        if ts in (IMPLICIT_LITTLE, DEFLATED_LITTLE):
            meta.TransferSyntaxUID = UID(EXPLICIT_LITTLE)
        meta.setdefault("MediaStorageSOPClassUID", ds.get("SOPClassUID", "1.2.840.10008.5.1.4.1.1.7"))
        meta.setdefault("MediaStorageSOPInstanceUID", ds.get("SOPInstanceUID", ""))
        buffer = io.BytesIO()
        from ..samples.dicom_writer import save_dataset

        save_dataset(ds, buffer)  # type: ignore[arg-type]
        return buffer.getvalue()
    except Exception as exc:  # pydicom raises many kinds
        raise DicomError(f"not a readable DICOM data set ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})",
                         file=path, field="data set") from exc


__all__ = ["CLASS_UID_TAGS", "FileDeidentifier", "InputError", "Outcome", "short_hash"]
