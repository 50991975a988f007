"""Low-level DICOM writers for sample and test data (R-5.7, R-7.2, R-7.3).

Three entry points, all deterministic (UIDs from :func:`RTSSBridgeLib.uids.deterministic_uid`,
no clock, no randomness):

* :func:`write_volume_series`: one single-frame file per slice (CT, MR or PET Image Storage),
  from a voxel array ``[k, j, i]`` or a per-slice callback, on any :class:`ImageGeometry`
  (feet-first, oblique, anisotropic, non-square pixels), with optional dropped and duplicated
  slices;
* :func:`write_enhanced_multiframe`: one Enhanced CT / Enhanced MR Image Storage file with
  shared and per-frame functional groups;
* :func:`write_single_image`: one 2-D image (US, CR) whose modality modules come from the caller.

Every file is Explicit VR Little Endian with a full file meta header and the SOP Common,
Patient, General Study, Patient Study, General Series, Frame of Reference (when the series has
one), General Equipment, General Image, Image Plane (3-D), Image Pixel modules and the private
block of :mod:`.identity`. Geometry comes only from :class:`ImageGeometry`
(``dicom_orientation``, ``dicom_pixel_spacing``, ``slice_position_lps``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Collection, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import UID

from ..errors import InputError
from ..geometry import ImageGeometry
from ..uids import deterministic_uid
from .identity import PRIVATE_GROUP, Identity, add_seconds, make_identity

EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
#: Implementation Class UID written in every file meta header (fixed, so output is byte-stable
#: across pydicom versions).
IMPLEMENTATION_CLASS_UID = deterministic_uid("MultiModalAnnotation", "ImplementationClassUID")
IMPLEMENTATION_VERSION_NAME = "MMANNO_0_1"

#: Storage SOP Class UIDs by modality (PS3.4 B.5).
SOP_CLASS_UIDS: Dict[str, str] = {
    "CT": "1.2.840.10008.5.1.4.1.1.2",
    "MR": "1.2.840.10008.5.1.4.1.1.4",
    "PT": "1.2.840.10008.5.1.4.1.1.128",
    "US": "1.2.840.10008.5.1.4.1.1.6.1",
    "CR": "1.2.840.10008.5.1.4.1.1.1",
    "DX": "1.2.840.10008.5.1.4.1.1.1.1",
}
#: Enhanced (multi-frame) Storage SOP Class UIDs.
ENHANCED_SOP_CLASS_UIDS: Dict[str, str] = {
    "CT": "1.2.840.10008.5.1.4.1.1.2.1",
    "MR": "1.2.840.10008.5.1.4.1.1.4.1",
}

VoxelSource = Union[np.ndarray, Callable[[int], np.ndarray]]
ProgressCallback = Callable[[int, int], None]

_PYDICOM_MAJOR = int(pydicom.__version__.split(".")[0])


def save_dataset(ds: Dataset, path: Union[str, Path]) -> None:
    """Write ``ds`` as a DICOM file (preamble, ``DICM``, file meta) on pydicom 2.4 and 3.x."""
    if _PYDICOM_MAJOR >= 3:
        ds.save_as(str(path), enforce_file_format=True)
    else:  # pydicom 2.4 (Slicer 5.8's): the body is encoded by these flags; follow the transfer syntax
        syntax = str(ds.file_meta.get("TransferSyntaxUID", EXPLICIT_VR_LITTLE_ENDIAN))
        ds.is_implicit_VR = syntax == "1.2.840.10008.1.2"
        ds.is_little_endian = syntax != "1.2.840.10008.1.2.2"
        ds.save_as(str(path), write_like_original=False)


def format_ds(value: float) -> str:
    """Decimal String text of ``value`` within DICOM's 16 characters, as precise as fits."""
    v = float(value)
    if v == 0.0:
        return "0"
    for digits in range(12, 3, -1):
        text = f"{v:.{digits}g}"
        if "e" in text:
            mantissa, exponent = text.split("e")
            text = f"{mantissa}e{int(exponent)}"
        if len(text) <= 16:
            return text
    raise ValueError(f"cannot write {value!r} as a DICOM DS")


def file_name_for(sop_instance_uid: str) -> str:
    """File name of an instance: a hash of its SOP Instance UID, so names never reveal slice order."""
    return hashlib.sha256(sop_instance_uid.encode("ascii")).hexdigest()[:20].upper() + ".dcm"


def instance_uid(series_instance_uid: str, k: int, *, duplicate: bool = False) -> str:
    """Deterministic SOP Instance UID of slice ``k`` (or of its duplicate copy) of a series."""
    if duplicate:
        return deterministic_uid(series_instance_uid, "instance", k, "duplicate")
    return deterministic_uid(series_instance_uid, "instance", k)


@dataclass(frozen=True)
class PixelEncoding:
    """How modality values become stored pixel values (Image Pixel and Modality LUT modules).

    ``stored = round((value - intercept) / slope)`` clipped to the stored range; a reader gets
    ``stored * slope + intercept`` back. With ``per_slice_slope`` each slice gets its own float
    RescaleSlope chosen from its maximum (as PET scanners do). With ``rescale`` False no Rescale
    attributes are written (classic MR, US, CR) and values are stored as they are.
    """

    bits_allocated: int = 16
    bits_stored: int = 16
    pixel_representation: int = 0
    photometric: str = "MONOCHROME2"
    rescale: bool = False
    rescale_intercept: float = 0.0
    rescale_slope: float = 1.0
    rescale_type: Optional[str] = None
    per_slice_slope: bool = False

    def __post_init__(self) -> None:
        if self.bits_allocated not in (8, 16):
            raise InputError(f"must be 8 or 16, got {self.bits_allocated}", field="bits_allocated")
        if not 1 <= self.bits_stored <= self.bits_allocated:
            raise InputError(f"must be 1..bits_allocated ({self.bits_allocated}), got {self.bits_stored}",
                             field="bits_stored")
        if self.pixel_representation not in (0, 1):
            raise InputError(f"must be 0 (unsigned) or 1 (signed), got {self.pixel_representation}",
                             field="pixel_representation")
        if self.photometric not in ("MONOCHROME1", "MONOCHROME2"):
            raise InputError(f"must be MONOCHROME1 or MONOCHROME2, got {self.photometric!r}", field="photometric")
        if not self.rescale_slope > 0:
            raise InputError(f"must be positive, got {self.rescale_slope}", field="rescale_slope")
        if self.per_slice_slope and not self.rescale:
            raise InputError("per-slice slopes need rescale=True", field="per_slice_slope")

    @property
    def stored_range(self) -> Tuple[int, int]:
        """Smallest and largest storable value."""
        if self.pixel_representation:
            return -(1 << (self.bits_stored - 1)), (1 << (self.bits_stored - 1)) - 1
        return 0, (1 << self.bits_stored) - 1

    @property
    def dtype(self) -> np.dtype:
        """numpy dtype of the stored pixels."""
        if self.bits_allocated == 8:
            return np.dtype(np.int8 if self.pixel_representation else np.uint8)
        return np.dtype(np.int16 if self.pixel_representation else np.uint16)

    def slope_for(self, values: np.ndarray) -> float:
        """RescaleSlope for a slice: fixed, or (per slice) the smallest that fits the slice's range.

        The slope is rounded to its DS text so that writer and reader use the same number.
        """
        if not self.per_slice_slope:
            return float(format_ds(self.rescale_slope))
        lo, hi = self.stored_range
        vmax = float(np.max(values)) - self.rescale_intercept
        vmin = float(np.min(values)) - self.rescale_intercept
        slope = max(vmax / hi if vmax > 0 else 0.0, vmin / lo if (vmin < 0 and lo < 0) else 0.0)
        if slope <= 0.0:
            return 1.0
        return float(format_ds(slope * 1.000001))

    def encode(self, values: np.ndarray) -> Tuple[np.ndarray, float, float]:
        """Stored pixels, slope and intercept for a slice of modality values."""
        slope = self.slope_for(values) if self.rescale else 1.0
        intercept = float(format_ds(self.rescale_intercept)) if self.rescale else 0.0
        lo, hi = self.stored_range
        v = np.asarray(values, dtype=np.float64)
        if self.rescale and (slope != 1.0 or intercept != 0.0):
            v = (v - intercept) / slope
        stored = np.clip(np.rint(v), lo, hi).astype(self.dtype)
        return stored, slope, intercept

    @staticmethod
    def decode(stored: np.ndarray, slope: float, intercept: float) -> np.ndarray:
        """Modality values a reader gets back from stored pixels."""
        return stored.astype(np.float64) * slope + intercept

    def quantise(self, values: np.ndarray) -> np.ndarray:
        """What a reader gets back after :meth:`encode` of ``values`` (float64)."""
        stored, slope, intercept = self.encode(values)
        return self.decode(stored, slope, intercept)

    def describe(self) -> Dict[str, Any]:
        """JSON description for ``case.json``."""
        return {
            "bits_allocated": self.bits_allocated,
            "bits_stored": self.bits_stored,
            "pixel_representation": self.pixel_representation,
            "photometric_interpretation": self.photometric,
            "rescale_intercept": float(self.rescale_intercept) if self.rescale else None,
            "rescale_slope": ("per-slice" if self.per_slice_slope else float(self.rescale_slope))
            if self.rescale else None,
            "rescale_type": self.rescale_type if self.rescale else None,
        }


def default_encoding(modality: str) -> PixelEncoding:
    """The encoding a modality gets unless the caller chooses one."""
    if modality == "CT":
        return PixelEncoding(16, 12, 0, rescale=True, rescale_intercept=-1024.0, rescale_type="HU")
    if modality == "MR":
        return PixelEncoding(16, 12, 0)
    if modality == "PT":
        return PixelEncoding(16, 16, 0, rescale=True, per_slice_slope=True, rescale_type="BQML")
    if modality == "US":
        return PixelEncoding(8, 8, 0)
    return PixelEncoding(16, 16, 0)


@dataclass(frozen=True)
class StudyInfo:
    """General Study values."""

    study_instance_uid: str
    date: str
    time: str
    accession_number: str
    study_id: str
    description: str


@dataclass(frozen=True)
class SeriesInfo:
    """General Series, Frame of Reference and General Equipment values plus extra attributes.

    ``attributes`` maps DICOM keywords to values (a list of dicts becomes a sequence) and is
    applied last, so it can add modality modules or override defaults.
    """

    series_instance_uid: str
    modality: str
    series_number: int = 1
    description: str = ""
    date: str = "20200101"
    time: str = "120000"
    frame_of_reference_uid: Optional[str] = None
    body_part: str = ""
    protocol_name: str = ""
    patient_position: Optional[str] = "HFS"
    manufacturer: str = "MMANNO Imaging Systems"
    model_name: str = "Synthetic Scanner"
    software_versions: str = "mmanno-samples 1.0"
    attributes: Mapping[str, Any] = field(default_factory=dict)


def _to_element_value(value: Any) -> Any:
    if isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
        return DicomSequence([dataset_from(v) for v in value])
    return value


def dataset_from(mapping: Mapping[str, Any]) -> Dataset:
    """A dataset from ``{keyword: value}``; lists of mappings become sequences."""
    ds = Dataset()
    apply_attributes(ds, mapping)
    return ds


def apply_attributes(ds: Dataset, mapping: Mapping[str, Any]) -> None:
    """Set ``{keyword: value}`` on ``ds`` (a list of mappings becomes a sequence; None deletes)."""
    for keyword, value in mapping.items():
        if value is None:
            if keyword in ds:
                delattr(ds, keyword)
            continue
        setattr(ds, keyword, _to_element_value(value))


def default_study(identity: Identity, uid_parts: Sequence[object]) -> StudyInfo:
    """A study for the generic writers when the caller gives none."""
    return StudyInfo(
        study_instance_uid=deterministic_uid(*uid_parts, "study"),
        date=identity.study_date,
        time=identity.study_time,
        accession_number=identity.accession_number,
        study_id=identity.study_id,
        description="SYNTHETIC TEST STUDY",
    )


def base_dataset(
    sop_class_uid: str,
    sop_instance_uid: str,
    identity: Identity,
    study: StudyInfo,
    series: SeriesInfo,
    instance_number: int,
) -> Dataset:
    """Dataset with file meta and the patient/study/series/equipment/general-image modules."""
    ds = Dataset()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class_uid)
    meta.MediaStorageSOPInstanceUID = UID(sop_instance_uid)
    meta.TransferSyntaxUID = UID(EXPLICIT_VR_LITTLE_ENDIAN)
    meta.ImplementationClassUID = UID(IMPLEMENTATION_CLASS_UID)
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    ds.file_meta = meta
    # SOP Common
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = sop_class_uid
    ds.SOPInstanceUID = sop_instance_uid
    ds.InstanceCreationDate = series.date
    ds.InstanceCreationTime = series.time
    ds.TimezoneOffsetFromUTC = "+0800"
    # Patient
    ds.PatientName = identity.patient.dicom
    ds.PatientID = identity.patient_id
    ds.IssuerOfPatientID = identity.issuer_of_patient_id
    ds.PatientBirthDate = identity.birth_date
    ds.PatientSex = identity.sex
    ds.OtherPatientIDs = identity.other_patient_ids
    ds.OtherPatientNames = identity.other_patient_name
    ds.PatientAddress = identity.address
    ds.PatientTelephoneNumbers = identity.telephone
    ds.EthnicGroup = "Han"
    # General Study
    ds.StudyInstanceUID = study.study_instance_uid
    ds.StudyDate = study.date
    ds.StudyTime = study.time
    ds.ReferringPhysicianName = identity.referring_physician.dicom
    ds.StudyID = study.study_id
    ds.AccessionNumber = study.accession_number
    ds.StudyDescription = study.description
    ds.PhysiciansOfRecord = identity.referring_physician.dicom
    ds.NameOfPhysiciansReadingStudy = identity.reading_physician.dicom
    # Patient Study
    ds.PatientAge = identity.age
    ds.PatientSize = format_ds(identity.size_m)
    ds.PatientWeight = format_ds(identity.weight_kg)
    ds.AdditionalPatientHistory = identity.additional_patient_history
    # General Series
    ds.Modality = series.modality
    ds.SeriesInstanceUID = series.series_instance_uid
    ds.SeriesNumber = series.series_number
    ds.SeriesDate = series.date
    ds.SeriesTime = series.time
    ds.SeriesDescription = series.description
    ds.PerformingPhysicianName = identity.performing_physician.dicom
    ds.OperatorsName = identity.operator.dicom
    if series.protocol_name:
        ds.ProtocolName = series.protocol_name
    if series.body_part:
        ds.BodyPartExamined = series.body_part
    if series.patient_position:
        ds.PatientPosition = series.patient_position
    # Frame of Reference
    if series.frame_of_reference_uid:
        ds.FrameOfReferenceUID = series.frame_of_reference_uid
        ds.PositionReferenceIndicator = ""
    # General Equipment
    ds.Manufacturer = series.manufacturer
    ds.InstitutionName = identity.institution_name
    ds.InstitutionAddress = identity.institution_address
    ds.StationName = identity.station_name
    ds.InstitutionalDepartmentName = identity.department
    ds.ManufacturerModelName = series.model_name
    ds.DeviceSerialNumber = identity.device_serial_number
    ds.SoftwareVersions = series.software_versions
    # General Image
    ds.InstanceNumber = int(instance_number)
    ds.ContentDate = series.date
    ds.ContentTime = add_seconds(series.time, 0.05 * max(int(instance_number) - 1, 0))
    ds.AcquisitionDate = series.date
    ds.AcquisitionTime = series.time
    ds.AcquisitionNumber = 1
    ds.ImageComments = identity.image_comments
    ds.BurnedInAnnotation = "NO"
    ds.LossyImageCompression = "00"
    # Private block (every private tag must go at de-identification, R-7.3)
    block = ds.private_block(PRIVATE_GROUP, identity.private_creator, create=True)
    block.add_new(0x10, "LO", identity.private_note)
    block.add_new(0x11, "SH", identity.accession_number[:16])
    block.add_new(0x12, "DS", "1.25")
    block.add_new(0x13, "LO", f"WS-{identity.station_name}")
    return ds


def set_pixels(ds: Dataset, stored: np.ndarray, encoding: PixelEncoding, slope: float, intercept: float,
               n_frames: Optional[int] = None) -> None:
    """Image Pixel module (and Rescale attributes when the encoding has them)."""
    if n_frames is None:
        rows, cols = stored.shape
    else:
        _, rows, cols = stored.shape
        ds.NumberOfFrames = int(n_frames)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = encoding.photometric
    ds.Rows = int(rows)
    ds.Columns = int(cols)
    ds.BitsAllocated = encoding.bits_allocated
    ds.BitsStored = encoding.bits_stored
    ds.HighBit = encoding.bits_stored - 1
    ds.PixelRepresentation = encoding.pixel_representation
    if encoding.rescale and n_frames is None:
        ds.RescaleIntercept = format_ds(intercept)
        ds.RescaleSlope = format_ds(slope)
        if encoding.rescale_type:
            ds.RescaleType = encoding.rescale_type
    data = np.ascontiguousarray(stored).astype(stored.dtype.newbyteorder("<"), copy=False).tobytes()
    if len(data) % 2:
        data += b"\0"
    ds.add_new(0x7FE00010, "OB" if encoding.bits_allocated == 8 else "OW", data)


def set_image_plane(ds: Dataset, geometry: ImageGeometry, k: int) -> None:
    """Image Plane module of slice ``k`` (values from :class:`ImageGeometry`)."""
    ds.PixelSpacing = [format_ds(v) for v in geometry.dicom_pixel_spacing()]
    ds.ImageOrientationPatient = [format_ds(v) for v in geometry.dicom_orientation()]
    position = geometry.slice_position_lps(k)
    ds.ImagePositionPatient = [format_ds(v) for v in position]
    ds.SliceThickness = format_ds(geometry.spacing_mm[2])
    ds.SliceLocation = format_ds(float(np.dot(position, geometry.slice_normal())))


def head_to_feet_instance_numbers(geometry: ImageGeometry) -> List[int]:
    """InstanceNumber of each slice ``k``: 1 for the most superior slice, increasing towards the feet.

    Scanners number axial images in acquisition order, which for a head-first chest or brain scan
    runs head to feet, so InstanceNumber is *not* the position-sorted index.
    """
    n = geometry.shape[2]
    z = [float(geometry.slice_position_lps(k)[2]) for k in range(n)]
    order = sorted(range(n), key=lambda kk: (-round(z[kk], 6), kk))
    numbers = [0] * n
    for rank, kk in enumerate(order):
        numbers[kk] = rank + 1
    return numbers


def _slice_source(voxels: VoxelSource, geometry: ImageGeometry) -> Callable[[int], np.ndarray]:
    rows, cols = geometry.shape[1], geometry.shape[0]
    if callable(voxels):
        def from_callback(k: int) -> np.ndarray:
            values = np.asarray(voxels(k))
            if values.shape != (rows, cols):
                raise InputError(f"slice {k} has shape {values.shape}, expected (rows, columns) = {(rows, cols)}",
                                 field="voxels")
            return values
        return from_callback
    array = np.asarray(voxels)
    if array.shape != geometry.array_shape:
        raise InputError(f"has shape {array.shape}, expected [k, j, i] = {geometry.array_shape}", field="voxels")
    return lambda k: array[k]


def write_volume_series(
    out_dir: Union[str, Path],
    geometry: ImageGeometry,
    voxels: VoxelSource,
    modality: str = "CT",
    *,
    encoding: Optional[PixelEncoding] = None,
    identity: Optional[Identity] = None,
    study: Optional[StudyInfo] = None,
    series: Optional[SeriesInfo] = None,
    slice_attributes: Optional[Callable[[int], Mapping[str, Any]]] = None,
    skip_slices: Collection[int] = (),
    duplicate_slices: Collection[int] = (),
    instance_numbers: Optional[Sequence[int]] = None,
    progress: Optional[ProgressCallback] = None,
) -> List[Path]:
    """Write a single-frame series, one file per slice, into ``out_dir`` (created if missing).

    Parameters
    ----------
    out_dir:
        Folder for the files; file names are hashes of the SOP Instance UIDs.
    geometry:
        The grid; slice ``k`` is written at ``geometry.slice_position_lps(k)``.
    voxels:
        Modality values (HU, Bq/ml, MR signal ...) as an array ``[k, j, i]``, or a callback
        ``k -> [j, i]`` so a long series never sits in memory.
    modality:
        ``CT``, ``MR`` or ``PT`` (selects the Storage SOP Class and the default encoding).
    encoding:
        Stored type and Rescale handling; :func:`default_encoding` when omitted.
    identity, study, series:
        Patient/staff values, General Study and General Series values. Defaults: the identity
        of ``make_identity(0, "generic")`` and UIDs derived from ``out_dir``'s path.
    slice_attributes:
        Optional ``k -> {keyword: value}`` applied to each slice last.
    skip_slices:
        Slice indices not written (a missing-slice case, R-7.2).
    duplicate_slices:
        Slice indices written twice; the copy has a new SOP Instance UID and InstanceNumber, the
        same position and pixels (a duplicated-slice case, R-7.2).
    instance_numbers:
        InstanceNumber per slice ``k``; default :func:`head_to_feet_instance_numbers`.
    progress:
        Called as ``progress(done, total)`` after each file.

    Returns
    -------
    list of Path
        Files written, in increasing ``k`` (a duplicate right after its original).

    Examples
    --------
    >>> g = ImageGeometry((64, 48, 5), (0.8, 0.6, 2.5), (-20.0, -15.0, 40.0),
    ...                   ((-1, 0, 0), (0, 1, 0), (0, 0, -1)))          # feet-first
    >>> files = write_volume_series(tmp, g, np.zeros(g.array_shape), "CT")  # doctest: +SKIP
    """
    if modality not in ("CT", "MR", "PT"):
        raise InputError(f"must be CT, MR or PT for a volume series, got {modality!r}", field="modality")
    n = geometry.shape[2]
    for name, ks in (("skip_slices", skip_slices), ("duplicate_slices", duplicate_slices)):
        bad = [k for k in ks if not 0 <= int(k) < n]
        if bad:
            raise InputError(f"slice index {bad[0]} is outside 0..{n - 1}", field=name)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    enc = encoding or default_encoding(modality)
    ident = identity or make_identity(0, "generic")
    uid_parts: Tuple[object, ...] = ("write_volume_series", str(out))
    std = study or default_study(ident, uid_parts)
    ser = series or SeriesInfo(
        series_instance_uid=deterministic_uid(*uid_parts, "series"), modality=modality,
        frame_of_reference_uid=deterministic_uid(*uid_parts, "frame-of-reference"),
        date=std.date, time=std.time)
    numbers = list(instance_numbers) if instance_numbers is not None else head_to_feet_instance_numbers(geometry)
    if len(numbers) != n:
        raise InputError(f"has {len(numbers)} entries for {n} slices", field="instance_numbers")
    source = _slice_source(voxels, geometry)
    skip = {int(k) for k in skip_slices}
    dups = sorted({int(k) for k in duplicate_slices})
    total = n - len(skip) + len(dups)
    written: List[Path] = []
    for k in range(n):
        copies = [False, True] if k in dups else [False]
        if k in skip:
            continue
        values = source(k)
        stored, slope, intercept = enc.encode(values)
        for dup in copies:
            number = numbers[k] if not dup else n + 1 + dups.index(k)
            sop_uid = instance_uid(ser.series_instance_uid, k, duplicate=dup)
            ds = base_dataset(SOP_CLASS_UIDS[modality], sop_uid, ident, std, ser, number)
            set_image_plane(ds, geometry, k)
            set_pixels(ds, stored, enc, slope, intercept)
            ds.ImageType = {"CT": ["ORIGINAL", "PRIMARY", "AXIAL"], "MR": ["ORIGINAL", "PRIMARY", "M", "ND"],
                            "PT": ["ORIGINAL", "PRIMARY"]}[modality]
            if modality == "PT":
                ds.ImageIndex = number if not dup else numbers[k]
                ds.NumberOfSlices = n
            apply_attributes(ds, ser.attributes)
            if slice_attributes is not None:
                apply_attributes(ds, slice_attributes(k))
            path = out / file_name_for(sop_uid)
            save_dataset(ds, path)
            written.append(path)
            if progress is not None:
                progress(len(written), total)
    return written


def write_enhanced_multiframe(
    out_dir: Union[str, Path],
    geometry: ImageGeometry,
    voxels: VoxelSource,
    modality: str = "CT",
    *,
    encoding: Optional[PixelEncoding] = None,
    identity: Optional[Identity] = None,
    study: Optional[StudyInfo] = None,
    series: Optional[SeriesInfo] = None,
    frame_order: Optional[Sequence[int]] = None,
) -> Path:
    """Write one Enhanced CT / Enhanced MR Image Storage file holding every slice as a frame.

    Geometry is carried by functional groups: PixelMeasuresSequence (PixelSpacing,
    SliceThickness, SpacingBetweenSlices) and PlaneOrientationSequence in the
    SharedFunctionalGroupsSequence, PlanePositionSequence (ImagePositionPatient) and
    FrameContentSequence (StackID, InStackPositionNumber, DimensionIndexValues) per frame, and
    PixelValueTransformationSequence (RescaleIntercept/Slope/Type) shared, or per frame when the
    encoding has per-slice slopes.

    Parameters
    ----------
    frame_order:
        Slice index shown by each frame (default ``0..n-1``); a permutation lets loader tests
        check that frames are sorted by position, not by frame number.

    Returns
    -------
    Path
        The file written (its name is a hash of its SOP Instance UID).
    """
    if modality not in ENHANCED_SOP_CLASS_UIDS:
        raise InputError(f"must be CT or MR for an enhanced multi-frame image, got {modality!r}", field="modality")
    n = geometry.shape[2]
    order = list(range(n)) if frame_order is None else [int(k) for k in frame_order]
    if sorted(order) != list(range(n)):
        raise InputError(f"must be a permutation of 0..{n - 1}", field="frame_order")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    enc = encoding or (PixelEncoding(16, 12, 0, rescale=True, rescale_intercept=-1024.0, rescale_type="HU")
                       if modality == "CT" else PixelEncoding(16, 12, 0, rescale=True, rescale_type="US"))
    if not enc.rescale:
        enc = PixelEncoding(enc.bits_allocated, enc.bits_stored, enc.pixel_representation, enc.photometric,
                            rescale=True, rescale_type="US")
    ident = identity or make_identity(0, "generic")
    uid_parts: Tuple[object, ...] = ("write_enhanced_multiframe", str(out))
    std = study or default_study(ident, uid_parts)
    ser = series or SeriesInfo(
        series_instance_uid=deterministic_uid(*uid_parts, "series"), modality=modality,
        frame_of_reference_uid=deterministic_uid(*uid_parts, "frame-of-reference"),
        date=std.date, time=std.time)
    source = _slice_source(voxels, geometry)
    frames = []
    transforms: List[Tuple[float, float]] = []
    for k in order:
        stored, slope, intercept = enc.encode(source(k))
        frames.append(stored)
        transforms.append((slope, intercept))
    stack = np.stack(frames)
    sop_uid = instance_uid(ser.series_instance_uid, 0)
    ds = base_dataset(ENHANCED_SOP_CLASS_UIDS[modality], sop_uid, ident, std, ser, 1)
    ds.InstanceNumber = 1
    acq = f"{ser.date}{ser.time[:6]}"
    ds.AcquisitionDateTime = acq
    ds.AcquisitionDuration = 12.5
    ds.ContentQualification = "PRODUCT"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]
    ds.PresentationLUTShape = "IDENTITY"
    ds.AcquisitionContextSequence = DicomSequence([])
    for keyword in ("AcquisitionDate", "AcquisitionTime"):
        delattr(ds, keyword)
    set_pixels(ds, stack, enc, 1.0, 0.0, n_frames=n)
    dim_uid = deterministic_uid(ser.series_instance_uid, "dimension-organization")
    ds.DimensionOrganizationSequence = DicomSequence([dataset_from({"DimensionOrganizationUID": dim_uid})])
    ds.DimensionIndexSequence = DicomSequence([
        dataset_from({"DimensionOrganizationUID": dim_uid, "DimensionIndexPointer": 0x00209056,
                      "FunctionalGroupPointer": 0x00209111, "DimensionDescriptionLabel": "Stack ID"}),
        dataset_from({"DimensionOrganizationUID": dim_uid, "DimensionIndexPointer": 0x00209057,
                      "FunctionalGroupPointer": 0x00209111, "DimensionDescriptionLabel": "In-Stack Position"}),
    ])
    per_frame_rescale = enc.per_slice_slope
    shared: Dict[str, Any] = {
        "PixelMeasuresSequence": [{
            "PixelSpacing": [format_ds(v) for v in geometry.dicom_pixel_spacing()],
            "SliceThickness": format_ds(geometry.spacing_mm[2]),
            "SpacingBetweenSlices": format_ds(geometry.spacing_mm[2]),
        }],
        "PlaneOrientationSequence": [{
            "ImageOrientationPatient": [format_ds(v) for v in geometry.dicom_orientation()],
        }],
    }
    frame_type = {"FrameType": ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"], "PixelPresentation": "MONOCHROME",
                  "VolumetricProperties": "VOLUME", "VolumeBasedCalculationTechnique": "NONE"}
    if modality == "CT":
        shared["CTImageFrameTypeSequence"] = [frame_type]
    else:
        shared["MRImageFrameTypeSequence"] = [dict(frame_type, ComplexImageComponent="MAGNITUDE",
                                                   AcquisitionContrast="T1")]
    if not per_frame_rescale:
        slope, intercept = transforms[0]
        shared["PixelValueTransformationSequence"] = [{
            "RescaleIntercept": format_ds(intercept), "RescaleSlope": format_ds(slope),
            "RescaleType": enc.rescale_type or "US"}]
    ds.SharedFunctionalGroupsSequence = DicomSequence([dataset_from(shared)])
    per_frame = []
    for f, k in enumerate(order):
        item: Dict[str, Any] = {
            "FrameContentSequence": [{
                "StackID": "1", "InStackPositionNumber": k + 1, "DimensionIndexValues": [1, k + 1],
                "FrameAcquisitionNumber": f + 1,
            }],
            "PlanePositionSequence": [{
                "ImagePositionPatient": [format_ds(v) for v in geometry.slice_position_lps(k)],
            }],
        }
        if per_frame_rescale:
            slope, intercept = transforms[f]
            item["PixelValueTransformationSequence"] = [{
                "RescaleIntercept": format_ds(intercept), "RescaleSlope": format_ds(slope),
                "RescaleType": enc.rescale_type or "US"}]
        per_frame.append(dataset_from(item))
    ds.PerFrameFunctionalGroupsSequence = DicomSequence(per_frame)
    apply_attributes(ds, ser.attributes)
    path = out / file_name_for(sop_uid)
    save_dataset(ds, path)
    return path


def write_single_image(
    path: Union[str, Path],
    stored: np.ndarray,
    sop_class_uid: str,
    sop_instance_uid: str,
    *,
    encoding: PixelEncoding,
    identity: Identity,
    study: StudyInfo,
    series: SeriesInfo,
    instance_number: int = 1,
) -> Path:
    """Write one 2-D image (US, CR) of already stored pixel values ``[rows, columns]``.

    The modality modules (Ultrasound regions, CR Image, orientation ...) come from
    ``series.attributes``.
    """
    arr = np.asarray(stored)
    if arr.ndim != 2:
        raise InputError(f"must be a 2-D array [rows, columns], got shape {arr.shape}", field="stored")
    lo, hi = encoding.stored_range
    if arr.size and (int(arr.min()) < lo or int(arr.max()) > hi):
        raise InputError(f"values must lie in {lo}..{hi} for {encoding.bits_stored} stored bits", field="stored")
    ds = base_dataset(sop_class_uid, sop_instance_uid, identity, study, series, instance_number)
    set_pixels(ds, arr.astype(encoding.dtype), encoding, 1.0, 0.0)
    apply_attributes(ds, series.attributes)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_dataset(ds, out)
    return out
