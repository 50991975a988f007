"""Fast reading of an RT Structure Set's ROI Contour Sequence from the file bytes (R-5.7).

Why it exists (measured on the benchmark structure set, 13 ROIs, 2 600 contours, 450 000 points):
pydicom builds a :class:`~pydicom.dataset.Dataset` for every contour item and, when a writer used
undefined lengths (plastimatch, MIM), parses the whole sequence while reading the file; that took
0.65 s of a 1.2 s import, and 0.3 s more for undefined-length files. Here the ROI Contour Sequence
(3006,0039) is walked on the raw bytes, taking from each contour only its geometric type, point
count, referenced SOP Instance UIDs and the ContourData bytes (parsed by numpy later); everything
else of the file is read by pydicom (:func:`pydicom.filereader.read_partial` up to the sequence,
:func:`pydicom.filereader.read_dataset` after it). Little endian, implicit or explicit VR; any
other encoding, or bytes that do not parse, make :func:`read_fast` return None and the caller uses
pydicom for everything. Tests check that both paths read the same values on every test file.

:func:`read_raw` goes one step further and reads the elements the import uses without pydicom at
all (:mod:`RTSSBridgeLib.rawread`): importing pydicom and reading the structure set's small
sequences with it cost 0.2 s of the benchmark's 0.95 s import. It applies to files in the
character sets :data:`rawread.CODECS` covers; others go to :func:`read_fast`.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

from . import rawread

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

ROI_CONTOUR_SEQUENCE = 0x30060039
_REFERENCED_ROI_NUMBER = 0x30060084
_ROI_DISPLAY_COLOR = 0x3006002A
_CONTOUR_SEQUENCE = 0x30060040
_CONTOUR_IMAGE_SEQUENCE = 0x30060016
_REFERENCED_SOP_INSTANCE_UID = 0x00081155
_CONTOUR_GEOMETRIC_TYPE = 0x30060042
_NUMBER_OF_CONTOUR_POINTS = 0x30060046
_CONTOUR_DATA = 0x30060050
_ITEM, _ITEM_END, _SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_UNDEFINED = 0xFFFFFFFF
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
_IMPLICIT_LE = "1.2.840.10008.1.2"
_EXPLICIT_LE = "1.2.840.10008.1.2.1"


@dataclass
class RawContour:
    """One Contour Sequence item: type, declared point count, referenced images, ContourData text."""

    geometric_type: str
    declared_points: Optional[int]
    referenced_uids: Tuple[str, ...]
    data: Optional[bytes]  # the ContourData value bytes; None when absent
    values: Optional[List[object]] = None  # ContourData values when pydicom had already converted them


@dataclass
class RawRoiContour:
    """One ROI Contour Sequence item.

    From :func:`read_raw` the Contour Sequence is walked only when :meth:`contour_list` is first
    called (``lazy`` holds where it is), so that the import walks each ROI's contours in the
    process that fills that ROI: 0.03 s of the benchmark import's serial part."""

    referenced_roi_number: Optional[int]
    color_text: Optional[str]
    has_contour_sequence: bool
    contours: List[RawContour] = field(default_factory=list)
    lazy: Optional[Tuple[_Walker, int, Optional[int]]] = None  # the walker, start, end (None: undefined)
    span_bytes: int = 0  # bytes of the Contour Sequence value (a work estimate before walking)

    def estimated_contours(self) -> int:
        """The number of contours; before walking, the number of Contour Geometric Type tags in the
        sequence's bytes (a work estimate only: the tag's bytes cannot occur in the text values)."""
        if self.lazy is None:
            return len(self.contours)
        walker, start, end = self.lazy
        stop = start + self.span_bytes if end is None else end
        return walker.buf.count(b"\x06\x30\x42\x00", start, stop)

    def contour_list(self) -> List[RawContour]:
        """The contours, walked from the bytes on first use."""
        if self.lazy is not None:
            walker, start, end = self.lazy
            self.lazy = None
            items, _after = walker.sequence(start, end, True)
            self.contours = [_contour_of(walker, item) for item in items]
        return self.contours


class _Malformed(Exception):
    """The bytes do not parse as expected; the caller falls back to pydicom."""


#: Sequences whose items are needed (all others are only skipped).
_WANTED_SEQUENCES = {_CONTOUR_SEQUENCE, _CONTOUR_IMAGE_SEQUENCE}
Span = Tuple[int, int]
Item = Dict[int, object]  # tag -> (start, end) span, or a list of items for a wanted sequence


class _Walker:
    """One-pass recursive-descent reader over little-endian bytes (implicit or explicit VR).

    Every byte is visited once: an undefined-length sequence or item is parsed while its end is
    looked for, never walked twice (walking twice made undefined-length files 4x slower).
    """

    def __init__(self, buf: bytes, implicit: bool, deferred: frozenset = frozenset()) -> None:
        """``deferred``: sequences left for later - their value span is kept (one of undefined
        length is still walked to find its end, keeping nothing)."""
        self.buf = buf
        self.size = len(buf)
        self.implicit = implicit
        self.deferred = deferred

    def header(self, pos: int) -> Tuple[int, int, int, bool]:
        """(tag, length, value start, is a sequence) of the element at ``pos``."""
        if pos + 8 > self.size:
            raise _Malformed("truncated element header")
        group, element, length = struct.unpack_from("<HHI", self.buf, pos)
        tag = (group << 16) | element
        if tag in (_ITEM, _ITEM_END, _SEQUENCE_END) or self.implicit:
            return tag, length, pos + 8, length == _UNDEFINED or tag in _WANTED_SEQUENCES
        vr = self.buf[pos + 4: pos + 6]
        if vr in _LONG_VRS:
            if pos + 12 > self.size:
                raise _Malformed("truncated element header")
            return tag, struct.unpack_from("<I", self.buf, pos + 8)[0], pos + 12, vr == b"SQ"
        return tag, length >> 16, pos + 8, False

    def sequence(self, pos: int, end: Optional[int], keep: bool) -> Tuple[List[Item], int]:
        """Items of a sequence value starting at ``pos`` (``end`` None: undefined length); the
        position after it. ``keep`` False only skips."""
        items: List[Item] = []
        while end is None or pos < end:
            tag, length, start, _sq = self.header(pos)
            if tag == _SEQUENCE_END:
                return items, start
            if tag != _ITEM:
                raise _Malformed(f"expected an item at {pos}")
            item, pos = self.item(start, None if length == _UNDEFINED else start + length, keep)
            if keep:
                items.append(item)
        return items, pos

    def item(self, pos: int, end: Optional[int], keep: bool) -> Tuple[Item, int]:
        """Elements of one item (``end`` None: up to its Item Delimitation Item)."""
        elements: Item = {}
        while end is None or pos < end:
            tag, length, start, is_sequence = self.header(pos)
            if tag == _ITEM_END:
                return elements, start
            value: object
            if keep and tag in self.deferred:
                if length == _UNDEFINED:
                    _skipped, pos = self.sequence(start, None, False)
                    value = ("deferred", start, None, pos - start)
                else:
                    if start + length > self.size:
                        raise _Malformed("value beyond the end")
                    value, pos = ("deferred", start, start + length, length), start + length
            elif length == _UNDEFINED:
                value, pos = self.sequence(start, None, keep and tag in _WANTED_SEQUENCES)
            elif is_sequence and tag in _WANTED_SEQUENCES and keep:
                value, pos = self.sequence(start, start + length, True)
            else:
                if start + length > self.size:
                    raise _Malformed("value beyond the end")
                value, pos = (start, start + length), start + length
            if keep:
                elements[tag] = value
        return elements, pos

    def text(self, span: object) -> Optional[str]:
        if not isinstance(span, tuple):
            return None
        return self.buf[span[0]: span[1]].decode("ascii", "replace").strip(" \x00")

    def raw(self, span: object) -> Optional[bytes]:
        return bytes(self.buf[span[0]: span[1]]) if isinstance(span, tuple) else None


def _number(text: Optional[str]) -> Optional[int]:
    try:
        return int(float(text)) if text else None
    except ValueError:
        return None


def _items(value: object) -> List[Item]:
    return value if isinstance(value, list) else []


def _contour_of(walker: _Walker, contour: Item) -> RawContour:
    images = _items(contour.get(_CONTOUR_IMAGE_SEQUENCE))
    uids = [walker.text(image.get(_REFERENCED_SOP_INSTANCE_UID)) for image in images]
    return RawContour((walker.text(contour.get(_CONTOUR_GEOMETRIC_TYPE)) or "").upper(),
                      _number(walker.text(contour.get(_NUMBER_OF_CONTOUR_POINTS))), tuple(u for u in uids if u),
                      walker.raw(contour.get(_CONTOUR_DATA)))


def _parse_sequence(walker: _Walker, start: int, end: Optional[int]) -> Tuple[List[RawRoiContour], int]:
    roi_items, after = walker.sequence(start, end, True)
    result = []
    for elements in roi_items:
        roi = RawRoiContour(_number(walker.text(elements.get(_REFERENCED_ROI_NUMBER))),
                            walker.text(elements.get(_ROI_DISPLAY_COLOR)), _CONTOUR_SEQUENCE in elements)
        value = elements.get(_CONTOUR_SEQUENCE)
        if isinstance(value, tuple) and len(value) == 4 and value[0] == "deferred":
            roi.lazy = (walker, value[1], value[2])
            roi.span_bytes = int(value[3])
        else:
            roi.contours = [_contour_of(walker, contour) for contour in _items(value)]
        result.append(roi)
    return result, after


def read_fast(path: str) -> Optional[Tuple[Dataset, List[RawRoiContour]]]:
    """The file's dataset without its ROI Contour Sequence, and that sequence read from the bytes;
    None when the fast path does not apply (the caller then reads the file with pydicom)."""
    import pydicom

    try:
        with open(path, "rb") as fp:
            ds = pydicom.filereader.read_partial(fp, stop_when=_at_roi_contours, force=True)
            syntax = str(ds.file_meta.get("TransferSyntaxUID", "")) if getattr(ds, "file_meta", None) else ""
            if syntax not in (_IMPLICIT_LE, _EXPLICIT_LE):
                return None
            implicit = syntax == _IMPLICIT_LE
            rest = fp.read()
    except Exception:  # any read problem: pydicom's own path will report it properly
        return None
    if not rest:
        return ds, []
    try:
        walker = _Walker(rest, implicit)
        tag, length, start, _is_sequence = walker.header(0)
        if tag != ROI_CONTOUR_SEQUENCE:
            return None
        contours, after = _parse_sequence(walker, start, None if length == _UNDEFINED else start + length)
    except (_Malformed, struct.error):
        return None
    if after < len(rest):
        try:
            # The tail is decoded with the file's character set (as Python codecs: Chinese code
            # meanings and interpreter names must survive).
            encodings = pydicom.charset.convert_encodings(ds.get("SpecificCharacterSet") or "ISO_IR 6")
            tail = pydicom.filereader.read_dataset(io.BytesIO(rest[after:]), implicit, True,
                                                   parent_encoding=encodings)
            for tag in list(tail.keys()):
                tail[tag]  # convert now: a broken element sends the file to pydicom's path, which reports it
        except Exception:
            return None
        ds.update(tail)
    return ds, contours


def _at_roi_contours(tag: object, vr: object, length: object) -> bool:
    return tag == ROI_CONTOUR_SEQUENCE


_CONTOUR_IMAGE = {"ReferencedSOPInstanceUID": 0x00081155}
_RT_SERIES = {"SeriesInstanceUID": 0x0020000E, "ContourImageSequence": (0x30060016, _CONTOUR_IMAGE)}
_RT_STUDY = {"RTReferencedSeriesSequence": (0x30060014, _RT_SERIES)}
_FRAME = {"FrameOfReferenceUID": 0x00200052, "RTReferencedStudySequence": (0x30060012, _RT_STUDY)}
_ROI = {"ROINumber": 0x30060022, "ROIName": 0x30060026, "ReferencedFrameOfReferenceUID": 0x30060024,
        "ROIGenerationAlgorithm": 0x30060036, "ROIDescription": 0x30060028}
_CODE = {"CodingSchemeDesignator": 0x00080102, "CodeValue": 0x00080100, "CodeMeaning": 0x00080104}
_OBSERVATION = {"ReferencedROINumber": 0x30060084, "RTROIInterpretedType": 0x300600A4,
                "RTROIIdentificationCodeSequence": (0x30060086, _CODE)}
#: What :func:`RTSSBridgeLib.rtss_import.read_structure_set` reads besides the ROI Contour
#: Sequence: keyword -> tag, or keyword -> (tag, layout of the sequence's items).
STRUCTURE_SET_LAYOUT: Dict[str, object] = {
    "SOPClassUID": 0x00080016, "Modality": 0x00080060, "SOPInstanceUID": 0x00080018,
    "SeriesInstanceUID": 0x0020000E, "StudyInstanceUID": 0x0020000D, "StructureSetLabel": 0x30060002,
    "StructureSetName": 0x30060004, "StructureSetDate": 0x30060008,
    "ReferencedFrameOfReferenceSequence": (0x30060010, _FRAME),
    "StructureSetROISequence": (0x30060020, _ROI),
    "RTROIObservationsSequence": (0x30060080, _OBSERVATION),
}


def read_raw(path: str) -> Optional[Tuple[Dict[str, Any], List[RawRoiContour]]]:
    """The structure set's elements in :data:`STRUCTURE_SET_LAYOUT` (as a dict of text and lists
    of dicts) and its ROI Contour Sequence, read without pydicom; None when the file needs
    pydicom (another encoding or character set, or bytes that do not parse)."""
    try:
        part = rawread.open_part10(path, stop_tag=ROI_CONTOUR_SEQUENCE)
        if part is None:
            return None
        body = part.body
        buf, pos = body.buf, part.end
        contours: List[RawRoiContour] = []
        if pos < len(buf):
            walker = _Walker(buf, part.implicit, deferred=frozenset({_CONTOUR_SEQUENCE}))
            tag, length, start, _is_sequence = walker.header(pos)
            if tag != ROI_CONTOUR_SEQUENCE:
                return None
            contours, pos = _parse_sequence(walker, start, None if length == _UNDEFINED else start + length)
            rest, _end = rawread.parse_elements(buf, pos, len(buf), part.implicit)
            body.spans.update(rest)
        return rawread.materialise(body, STRUCTURE_SET_LAYOUT), contours
    except (rawread.Unreadable, _Malformed, struct.error, OSError, ValueError):
        return None
