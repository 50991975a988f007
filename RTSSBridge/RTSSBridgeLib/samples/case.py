"""Sample-case orchestration: options, the write-then-rename folder, series writing, manifest.

:func:`write_sample` validates the options, asks the kind module for a plan (the 3-D series to
write and a ``finish`` step for 2-D images and ground truth), writes everything into a hidden
folder beside ``out_dir``, validates ``case.json`` against
``Resources/schemas/sample-case.schema.json`` and renames the folder into place, so a crash never
leaves a half case that looks complete.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, Union

import numpy as np

from .. import resources
from ..errors import InputError, NotApplicableError
from ..fileio import atomic_directory
from ..geometry import ImageGeometry
from ..uids import deterministic_uid
from .dicom_writer import (
    SOP_CLASS_UIDS,
    PixelEncoding,
    ProgressCallback,
    SeriesInfo,
    StudyInfo,
    file_name_for,
    head_to_feet_instance_numbers,
    instance_uid,
    write_volume_series,
)
from .ground_truth import json_text
from .identity import Identity, add_seconds, rng_for
from .phantom import PhantomSampler, mat3, rotation_matrix, vec3

#: Version of the generator; part of ``case.json`` and bumped whenever output bytes change.
GENERATOR_VERSION = "1.1.0"
#: ``$id`` of the manifest schema.
SCHEMA_ID = "https://multimodalannotation.github.io/schemas/sample-case/v1"

#: Sample kinds, in the order the command line lists them.
KINDS: Tuple[str, ...] = ("ct-chest", "mr-brain-mets", "pet-ct", "us-thyroid", "xray-ra")
#: Kinds whose images are single 2-D pictures (no volume options).
KINDS_2D: Tuple[str, ...] = ("us-thyroid", "xray-ra")
#: Default slice count of each 3-D kind's primary series (``slices`` overrides it).
DEFAULT_PRIMARY_SLICES: Dict[str, int] = {"ct-chest": 140, "mr-brain-mets": 135, "pet-ct": 100}
#: Which series of each 3-D kind the volume options act on.
PRIMARY_SERIES: Dict[str, str] = {"ct-chest": "CT", "mr-brain-mets": "T1W_C", "pet-ct": "CT"}
MIN_SLICES = 2
MAX_SLICES = 1000
MAX_SEED = 2**32 - 1
#: Rotations of the primary grid for ``oblique`` (degrees, applied about the grid centre:
#: first about the patient's left-right axis, then about the anterior-posterior axis).
OBLIQUE_DEGREES: Tuple[Tuple[str, float], ...] = (("x", 12.0), ("y", 7.0))


@dataclass(frozen=True)
class SampleOptions:
    """Validated options of one sample case (see :func:`validate_options`)."""

    kind: str
    seed: int = 0
    oblique: bool = False
    drop_slice: Optional[int] = None
    duplicate_slice: Optional[int] = None
    slices: Optional[int] = None

    @property
    def primary_slices(self) -> int:
        """Slice count of the primary series (3-D kinds)."""
        return self.slices if self.slices is not None else DEFAULT_PRIMARY_SLICES.get(self.kind, 1)

    def to_json(self) -> Dict[str, Any]:
        """The ``options`` object of ``case.json``."""
        return {"oblique": self.oblique, "drop_slice": self.drop_slice, "duplicate_slice": self.duplicate_slice,
                "slices": self.slices}


def _int_option(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InputError(f"must be an integer, got {value!r}", field=name)
    return int(value)


def validate_options(kind: Any, *, seed: Any = 0, oblique: Any = False, drop_slice: Any = None,
                     duplicate_slice: Any = None, slices: Any = None) -> SampleOptions:
    """Check every option and return them as :class:`SampleOptions`.

    Raises
    ------
    InputError
        Unknown kind, seed outside ``0..2**32-1``, slice count outside
        ``MIN_SLICES..MAX_SLICES``, slice index outside the primary series, or the same slice
        both dropped and duplicated.
    NotApplicableError
        A volume option (oblique, drop_slice, duplicate_slice, slices) on a 2-D kind.
    """
    if kind not in KINDS:
        raise InputError(f"unknown sample kind {kind!r}; valid kinds are {', '.join(KINDS)}", field="kind")
    seed_value = _int_option("seed", seed)
    if not 0 <= seed_value <= MAX_SEED:
        raise InputError(f"must be from 0 to {MAX_SEED}, got {seed_value}", field="seed")
    if not isinstance(oblique, (bool, np.bool_)):
        raise InputError(f"must be true or false, got {oblique!r}", field="oblique")
    if kind in KINDS_2D:
        volume_kinds = ", ".join(k for k in KINDS if k not in KINDS_2D)
        for name, value, used in (("oblique", oblique, bool(oblique)),
                                  ("drop_slice", drop_slice, drop_slice is not None),
                                  ("duplicate_slice", duplicate_slice, duplicate_slice is not None),
                                  ("slices", slices, slices is not None)):
            if used:
                raise NotApplicableError(
                    f"does not apply to {kind!r}, whose images are single 2-D pictures (got {value!r}); "
                    f"drop the option or use one of {volume_kinds}", field=name)
    n_slices = None
    if slices is not None:
        n_slices = _int_option("slices", slices)
        if not MIN_SLICES <= n_slices <= MAX_SLICES:
            raise InputError(f"must be from {MIN_SLICES} to {MAX_SLICES}, got {n_slices}", field="slices")
    n = n_slices if n_slices is not None else DEFAULT_PRIMARY_SLICES.get(kind, 1)
    checked: Dict[str, Optional[int]] = {}
    for name, value in (("drop_slice", drop_slice), ("duplicate_slice", duplicate_slice)):
        if value is None:
            checked[name] = None
            continue
        k = _int_option(name, value)
        if not 0 <= k < n:
            raise InputError(f"slice {k} is outside 0..{n - 1} (0-based in ascending position order; the "
                             f"{PRIMARY_SERIES[kind]} series of {kind} has {n} slices)", field=name)
        checked[name] = k
    if checked["drop_slice"] is not None and checked["drop_slice"] == checked["duplicate_slice"]:
        raise InputError(f"must name another slice than drop_slice (both are {checked['drop_slice']})",
                         field="duplicate_slice")
    return SampleOptions(kind, seed_value, bool(oblique), checked["drop_slice"], checked["duplicate_slice"], n_slices)


class Context:
    """What a kind module needs while planning and writing: options, identity, UIDs, randomness,
    the (temporary) case root and progress reporting."""

    def __init__(self, options: SampleOptions, identity: Identity, root: Optional[Path] = None,
                 progress: Optional[ProgressCallback] = None) -> None:
        self.options = options
        self.identity = identity
        self.root = root
        self._progress = progress
        self._done = 0
        self._total = 0

    def uid(self, *parts: object) -> str:
        """Deterministic UID of this sample (``uids.deterministic_uid(seed, kind, *parts)``)."""
        return deterministic_uid(self.options.seed, self.options.kind, *parts)

    def rng(self, *purpose: object) -> np.random.Generator:
        """A generator for one purpose, seeded from ``(seed, kind, purpose)``."""
        return rng_for(self.options.seed, self.options.kind, *purpose)

    def path(self, relative: str) -> Path:
        """Absolute path of ``relative`` inside the case root (which must be set)."""
        if self.root is None:
            raise RuntimeError("this context has no output folder (planning only)")
        return self.root / relative

    def add_work(self, units: int) -> None:
        """Announce ``units`` more progress steps."""
        self._total += int(units)

    def step(self, units: int = 1) -> None:
        """Report ``units`` finished progress steps."""
        self._done += int(units)
        if self._progress is not None:
            self._progress(min(self._done, self._total), self._total)

    def oblique_geometry(self, base: ImageGeometry) -> ImageGeometry:
        """``base`` rotated about its centre by :data:`OBLIQUE_DEGREES` (the phantom stays put)."""
        rot = np.eye(3)
        for axis, degrees in OBLIQUE_DEGREES:
            rot = rotation_matrix(axis, degrees) @ rot
        direction = rot @ base.direction_matrix
        centre_ijk = (np.asarray(base.shape, dtype=np.float64) - 1.0) / 2.0
        centre = base.ijk_to_lps(centre_ijk)
        at_zero = ImageGeometry(base.shape, base.spacing_mm, (0.0, 0.0, 0.0), mat3(direction))
        origin = centre - at_zero.ijk_to_lps(centre_ijk)
        return ImageGeometry(base.shape, base.spacing_mm, vec3(origin), at_zero.direction)


@dataclass
class VolumePlan:
    """One 3-D series of a sample: its grid, the phantom sampler and how tissue becomes values.

    ``values(k, tissue)`` turns the tissue-index slice ``k`` into modality values (noise
    included, deterministic per slice). :meth:`render` is what the writer stores before
    quantisation; :meth:`intended` is what a correct reader must return.
    """

    key: str
    folder: str
    modality: str
    geometry: ImageGeometry
    encoding: PixelEncoding
    sampler: PhantomSampler
    values: Callable[[int, np.ndarray], np.ndarray]
    study: StudyInfo
    series: SeriesInfo
    role: str = "primary"
    label_lut: Optional[np.ndarray] = None
    slice_attributes: Optional[Callable[[int], Mapping[str, Any]]] = None
    oblique: bool = False
    description: str = ""
    labels: Optional[np.ndarray] = field(default=None, repr=False)

    def render(self, k: int) -> np.ndarray:
        """Modality values of slice ``k`` ``[j, i]`` before quantisation."""
        return self.values(k, self.sampler.tissue_slice(k))

    def intended(self, k: int) -> np.ndarray:
        """Values a correct reader gets for slice ``k`` (after encoding and rescale)."""
        return self.encoding.quantise(self.render(k))

    def label_slice(self, k: int) -> np.ndarray:
        """Ground-truth labels of slice ``k`` (needs ``label_lut``)."""
        if self.label_lut is None:
            raise RuntimeError(f"series {self.key} has no labelmap")
        return self.label_lut[self.sampler.tissue_slice(k)].astype(np.uint8)


@dataclass
class KindPlan:
    """What a kind module returns: volumes to write and a ``finish`` step.

    ``finish(ctx, plan)`` runs after the volumes are written (their ``labels`` are filled when
    they have a ``label_lut``); it writes 2-D images and ground truth and returns a
    :class:`KindResult`.
    """

    volumes: List[VolumePlan]
    studies: List[StudyInfo]
    finish: Callable[[Context, KindPlan], KindResult]
    finish_work: int = 1
    data: Dict[str, Any] = field(default_factory=dict)

    def volume(self, key: str) -> VolumePlan:
        """The planned volume with ``key``."""
        for v in self.volumes:
            if v.key == key:
                return v
        raise KeyError(key)


@dataclass
class KindResult:
    """Manifest pieces from a kind's ``finish`` step."""

    series: List[Dict[str, Any]] = field(default_factory=list)
    ground_truth: List[Dict[str, Any]] = field(default_factory=list)
    extra: Dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SeriesRecord:
    """One written series of a sample case."""

    key: str
    dir: Path
    series_uid: str
    modality: str
    geometry: ImageGeometry
    n_files: int
    study_uid: str = ""
    frame_of_reference_uid: Optional[str] = None
    role: str = "primary"


@dataclass(frozen=True)
class SampleCase:
    """A written sample case (what :func:`write_sample` returns)."""

    kind: str
    seed: int
    root: Path
    series: List[SeriesRecord]
    manifest: Path

    def series_by_key(self, key: str) -> SeriesRecord:
        """The series with ``key`` (``CT``, ``T1W_C``, ``T2W``, ``PT``, ``US``, ``CR_HAND`` ...)."""
        for s in self.series:
            if s.key == key:
                return s
        raise KeyError(f"{key!r} is not a series of this {self.kind} case; have {[s.key for s in self.series]}")


def study_json(study: StudyInfo) -> Dict[str, Any]:
    """Manifest entry of a study."""
    return {"study_instance_uid": study.study_instance_uid, "accession_number": study.accession_number,
            "study_id": study.study_id, "description": study.description, "date": study.date, "time": study.time}


def series_json(*, key: str, role: str, folder: str, modality: str, study: StudyInfo, series: SeriesInfo,
                geometry: ImageGeometry, geometry_frame: str, n_files: int, encoding: PixelEncoding,
                options_applied: Mapping[str, Any], description: str,
                instance_numbering: str) -> Dict[str, Any]:
    """Manifest entry of a series."""
    return {
        "key": key,
        "role": role,
        "dir": f"dicom/{folder}",
        "modality": modality,
        "sop_class_uid": SOP_CLASS_UIDS[modality],
        "study_instance_uid": study.study_instance_uid,
        "series_instance_uid": series.series_instance_uid,
        "frame_of_reference_uid": series.frame_of_reference_uid,
        "series_number": series.series_number,
        "series_description": series.description,
        "geometry": geometry.to_dict(),
        "geometry_frame": geometry_frame,
        "n_files": n_files,
        "pixel_encoding": encoding.describe(),
        "instance_numbering": instance_numbering,
        "options_applied": dict(options_applied),
        "description": description,
    }


def _write_volume(ctx: Context, plan: VolumePlan) -> Dict[str, Any]:
    """Write one planned volume (applying drop/duplicate when it is the primary series)."""
    opts = ctx.options
    geometry = plan.geometry
    n = geometry.shape[2]
    is_primary = plan.role == "primary"
    drop = opts.drop_slice if is_primary else None
    dup = opts.duplicate_slice if is_primary else None
    numbers = head_to_feet_instance_numbers(geometry)
    if plan.label_lut is not None:
        plan.labels = np.zeros(geometry.array_shape, dtype=np.uint8)

    def source(k: int) -> np.ndarray:
        tissue = plan.sampler.tissue_slice(k)
        if plan.labels is not None and plan.label_lut is not None:
            plan.labels[k] = plan.label_lut[tissue]
        return plan.values(k, tissue)

    folder = ctx.path(f"dicom/{plan.folder}")
    write_volume_series(
        folder, geometry, source, plan.modality, encoding=plan.encoding, identity=ctx.identity,
        study=plan.study, series=plan.series, slice_attributes=plan.slice_attributes,
        skip_slices=() if drop is None else (drop,), duplicate_slices=() if dup is None else (dup,),
        instance_numbers=numbers, progress=lambda done, total: ctx.step())
    if drop is not None and plan.labels is not None and plan.label_lut is not None:
        plan.labels[drop] = plan.label_slice(drop)
    applied: Dict[str, Any] = {"oblique": plan.oblique, "drop_slice": None, "duplicate_slice": None}
    series_uid = plan.series.series_instance_uid
    if drop is not None:
        uid = instance_uid(series_uid, drop)
        applied["drop_slice"] = {"k": drop, "file": file_name_for(uid), "sop_instance_uid": uid,
                                 "instance_number": numbers[drop]}
    if dup is not None:
        uid = instance_uid(series_uid, dup)
        dup_uid = instance_uid(series_uid, dup, duplicate=True)
        applied["duplicate_slice"] = {"k": dup, "file": file_name_for(uid), "sop_instance_uid": uid,
                                      "instance_number": numbers[dup], "duplicate_file": file_name_for(dup_uid),
                                      "duplicate_sop_instance_uid": dup_uid, "duplicate_instance_number": n + 1}
    n_files = n - (drop is not None) + (dup is not None)
    return series_json(
        key=plan.key, role=plan.role, folder=plan.folder, modality=plan.modality, study=plan.study,
        series=plan.series, geometry=geometry, geometry_frame="patient-lps", n_files=n_files,
        encoding=plan.encoding, options_applied=applied, description=plan.description,
        instance_numbering="head-to-feet: InstanceNumber 1 is the most superior slice (largest LPS z), "
                           "so it runs opposite to the 0-based position index k")


def _kind_module(kind: str) -> Any:
    import importlib

    return importlib.import_module(f"{__package__}.{kind.replace('-', '_')}")


def plan_sample(kind: str, *, seed: int = 0, oblique: bool = False, drop_slice: Optional[int] = None,
                duplicate_slice: Optional[int] = None, slices: Optional[int] = None) -> KindPlan:
    """The plan :func:`write_sample` would follow, without writing anything.

    Tests use it to recompute what each voxel should hold (``plan.volume("CT").intended(k)``).
    """
    options = validate_options(kind, seed=seed, oblique=oblique, drop_slice=drop_slice,
                               duplicate_slice=duplicate_slice, slices=slices)
    module = _kind_module(kind)
    ctx = Context(options, module.identity(options))
    plan: KindPlan = module.build(ctx)
    return plan


def schema_path() -> Path:
    """Location of ``sample-case.schema.json`` in the shared resources."""
    return resources.schema_path("sample-case")


@lru_cache(maxsize=1)
def load_schema() -> Dict[str, Any]:
    """The sample-case JSON Schema (parsed once)."""
    with open(schema_path(), encoding="utf-8") as fh:
        schema: Dict[str, Any] = json.load(fh)
    return schema


def validate_manifest(manifest: Mapping[str, Any]) -> None:
    """Raise :class:`InputError` naming the first schema violation of a ``case.json`` document."""
    import jsonschema

    validator_cls = jsonschema.validators.validator_for(load_schema())
    validator = validator_cls(load_schema())
    errors = sorted(validator.iter_errors(manifest), key=lambda e: list(e.absolute_path))
    if errors:
        err = errors[0]
        where = "/".join(str(p) for p in err.absolute_path) or "(root)"
        raise InputError(f"{where}: {err.message}", file="case.json", field="schema")


def _check_out_dir(out_dir: Path) -> None:
    if out_dir.exists():
        if not out_dir.is_dir():
            raise InputError(f"{out_dir} exists and is not a folder; choose a new folder", field="out_dir")
        if any(out_dir.iterdir()):
            raise InputError(f"{out_dir} exists and is not empty; samples never overwrite, choose a new folder",
                             field="out_dir")


def write_sample(kind: str, out_dir: Union[str, Path], *, seed: int = 0, oblique: bool = False,
                 drop_slice: Optional[int] = None, duplicate_slice: Optional[int] = None,
                 slices: Optional[int] = None, progress: Optional[ProgressCallback] = None) -> SampleCase:
    """Generate sample case ``kind`` into the new folder ``out_dir`` (R-6.3, R-7.2, R-7.3 test data).

    Parameters
    ----------
    kind:
        One of :data:`KINDS`.
    out_dir:
        Folder to create; it must not exist or be empty. Output is written to a hidden folder
        beside it and renamed at the end.
    seed:
        0 .. 2**32-1; fixes identities, UIDs, dates, lesion placement and noise. The same
        arguments give byte-identical files.
    oblique:
        3-D kinds: rotate the primary series' grid by 12 deg (about left-right) and 7 deg (about
        anterior-posterior); the phantom stays fixed in patient space.
    drop_slice, duplicate_slice:
        3-D kinds: 0-based slice index (ascending position) of the primary series to omit, or
        to write twice (the copy gets a new SOP Instance UID).
    slices:
        3-D kinds: slice count of the primary series (default :data:`DEFAULT_PRIMARY_SLICES`).
    progress:
        Called as ``progress(done, total)``.

    Returns
    -------
    SampleCase

    Raises
    ------
    InputError, NotApplicableError
        See :func:`validate_options`; ``out_dir`` existing and not empty.
    """
    options = validate_options(kind, seed=seed, oblique=oblique, drop_slice=drop_slice,
                               duplicate_slice=duplicate_slice, slices=slices)
    out = Path(out_dir)
    _check_out_dir(out)
    with atomic_directory(out) as temp:
        module = _kind_module(kind)
        ctx = Context(options, module.identity(options), temp, progress)
        plan: KindPlan = module.build(ctx)
        ctx.add_work(sum(v.geometry.shape[2] for v in plan.volumes) + plan.finish_work + 1
                     + (options.duplicate_slice is not None) - (options.drop_slice is not None))
        series_entries = [_write_volume(ctx, v) for v in plan.volumes]
        result = plan.finish(ctx, plan)
        series_entries.extend(result.series)
        manifest = build_manifest(ctx, plan, series_entries, result)
        validate_manifest(manifest)
        (temp / "case.json").write_text(json_text(manifest), encoding="utf-8")
        ctx.step()
    records = [
        SeriesRecord(key=s["key"], dir=out / s["dir"], series_uid=s["series_instance_uid"], modality=s["modality"],
                     geometry=ImageGeometry.from_dict(s["geometry"]), n_files=s["n_files"],
                     study_uid=s["study_instance_uid"], frame_of_reference_uid=s["frame_of_reference_uid"],
                     role=s["role"])
        for s in series_entries
    ]
    return SampleCase(kind=kind, seed=options.seed, root=out, series=records, manifest=out / "case.json")


def build_manifest(ctx: Context, plan: KindPlan, series_entries: List[Dict[str, Any]],
                   result: KindResult) -> Dict[str, Any]:
    """Assemble ``case.json`` (validated against the schema before it is written)."""
    ident = ctx.identity
    manifest: Dict[str, Any] = {
        "schema": SCHEMA_ID,
        "generator": {"name": "RTSSBridgeLib.samples", "version": GENERATOR_VERSION},
        "kind": ctx.options.kind,
        "seed": ctx.options.seed,
        "options": ctx.options.to_json(),
        "patient": {"sex": ident.sex, "age": ident.age, "weight_kg": ident.weight_kg, "size_m": ident.size_m},
        "studies": [study_json(s) for s in plan.studies],
        "series": series_entries,
        "ground_truth": result.ground_truth,
        "identifying_values": ident.identifying_values(),
    }
    if len({s.accession_number for s in plan.studies}) > 1:
        manifest["identifying_values"]["AccessionNumber"] = [s.accession_number for s in plan.studies]
    manifest.update(result.extra)
    return manifest


def make_study(ctx: Context, key: str, description: str, *, accession_number: Optional[str] = None,
               minutes_after: float = 0.0) -> StudyInfo:
    """A study of this sample (UID from ``key``; date and time from the identity)."""
    ident = ctx.identity
    time = add_seconds(ident.study_time, 60.0 * minutes_after)[:6]
    return StudyInfo(study_instance_uid=ctx.uid("study", key), date=ident.study_date, time=time,
                     accession_number=accession_number or ident.accession_number,
                     study_id=ident.study_id if not minutes_after else str(int(ident.study_id) + 1),
                     description=description)


def make_series(ctx: Context, study: StudyInfo, key: str, modality: str, *, number: int, description: str,
                minutes_after: float, frame_of_reference_uid: Optional[str], body_part: str,
                protocol: str, model_name: str, attributes: Mapping[str, Any],
                patient_position: Optional[str] = "HFS") -> SeriesInfo:
    """A series of this sample (UID from ``key``; time ``minutes_after`` the study time)."""
    return SeriesInfo(
        series_instance_uid=ctx.uid("series", key), modality=modality, series_number=number,
        description=description, date=study.date, time=add_seconds(study.time, 60.0 * minutes_after),
        frame_of_reference_uid=frame_of_reference_uid, body_part=body_part, protocol_name=protocol,
        patient_position=patient_position, model_name=model_name, attributes=dict(attributes))


def rounded(values: Any, digits: int = 4) -> Any:
    """Lists of floats rounded for JSON (ground-truth positions)."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim == 0:
        v = float(arr)
        return round(v, digits) if math.isfinite(v) else None
    return [rounded(a, digits) for a in arr]
