"""Export packages (R-6.11, Appendix A.2.5): an annotation with its masks, template, task and a
manifest of SHA-256 digests, as a folder or a zip file.

Layout::

    annotation.json        the annotation document (Appendix C); mask paths are relative
    template.json          the label template used (exact copy of its JSON form)
    task.json              the task definition (when given)
    masks/<id>.nii.gz      one NIfTI per mask annotation (layout per_mask), or
    masks/labelmap.nii.gz  one labelmap with the template's values (layout labelmap)
    manifest.json          every other file with its SHA-256 and size

Reader API (what QC and provenance use)::

    package = read_package("case.mmanno.zip")       # or a folder
    package.document          # AnnotationDocument
    package.template          # LabelTemplate; package.label_set -> RTSSBridgeLib LabelSet
    package.task              # TaskDefinition or None
    package.masks["LESION_01"].voxels     # bool [k, j, i]
    package.masks["LESION_01"].geometry   # ImageGeometry of the mask file
    package.manifest          # the manifest JSON

:func:`verify_package` recomputes every digest and reports changed, missing and extra files
and unsafe entries (absolute paths, ``..``, links pointing out of the package).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import numpy as np

from RTSSBridgeLib.errors import InputError
from RTSSBridgeLib.fileio import atomic_directory, atomic_path, sha256_file, write_json_atomic
from RTSSBridgeLib.geometry import ImageGeometry
from RTSSBridgeLib.labels import LabelSet
from RTSSBridgeLib.nifti import read_nifti, write_nifti

from . import __version__
from .documents import (
    MASK_GRID_TOLERANCE_MM,
    AnnotationDocument,
    DocumentError,
    document_problems_against_geometry,
    document_problems_against_template,
    now_utc,
    read_document,
    resolve_inside,
    unsafe_path_reason,
)
from .schemas import read_json, schema_id, schema_problems
from .tasks import TaskDefinition, read_task
from .templates import LabelTemplate, read_template_file

MANIFEST = "manifest.json"
DOCUMENT = "annotation.json"
TEMPLATE = "template.json"
TASK = "task.json"
LABELMAP = "masks/labelmap.nii.gz"
AUDIT_TRAIL = "audit.jsonl"
AUDIT_HEAD = "audit.head.json"
LAYOUTS = ("per_mask", "labelmap")
PathLike = Union[str, "os.PathLike[str]"]


@dataclass(frozen=True)
class MaskArray:
    """A mask of one annotation: boolean voxels ``[k, j, i]`` on the grid of its NIfTI file."""

    voxels: np.ndarray
    geometry: ImageGeometry


@dataclass
class AnnotationPackage:
    """A read package (see the module docstring)."""

    root: Path
    document: AnnotationDocument
    template: LabelTemplate
    task: Optional[TaskDefinition]
    masks: Dict[str, MaskArray]
    manifest: Dict[str, Any]

    @property
    def label_set(self) -> LabelSet:
        return self.template.to_label_set()


@dataclass
class VerifyReport:
    """What :func:`verify_package` found; ``ok`` when nothing."""

    changed: List[str] = field(default_factory=list)
    missing: List[str] = field(default_factory=list)
    extra: List[str] = field(default_factory=list)
    unsafe: List[str] = field(default_factory=list)
    n_files: int = 0
    audit: List[str] = field(default_factory=list)  # problems of the shipped audit trail

    @property
    def ok(self) -> bool:
        return not (self.changed or self.missing or self.extra or self.unsafe or self.audit)

    def lines(self) -> List[str]:
        return ([f"changed: {p}" for p in self.changed] + [f"missing: {p}" for p in self.missing]
                + [f"extra: {p}" for p in self.extra] + [f"unsafe: {p}" for p in self.unsafe]
                + [f"audit: {p}" for p in self.audit])

    def to_dict(self) -> Dict[str, Any]:
        return {"ok": self.ok, "n_files": self.n_files, "changed": self.changed, "missing": self.missing,
                "extra": self.extra, "unsafe": self.unsafe, "audit": self.audit}


# --------------------------------------------------------------------------- export
def _mask_of(document: AnnotationDocument, annotation_id: str, source_dir: Path,
             masks: Optional[Mapping[str, np.ndarray]]) -> np.ndarray:
    """Boolean ``[k, j, i]`` mask of an annotation, from ``masks`` or from its file."""
    grid = document.image.geometry
    if masks is not None and annotation_id in masks:
        arr = np.asarray(masks[annotation_id])
        if arr.shape != grid.array_shape:
            raise InputError(f"mask array shape {list(arr.shape)} is not the image's [k, j, i] "
                             f"{list(grid.array_shape)}", field=f"masks.{annotation_id}")
        return arr.astype(bool)
    item = document.annotation(annotation_id)
    path = resolve_inside(source_dir, str(item.data["mask_file"]))
    image = read_nifti(path)
    distance = image.geometry.max_corner_distance_mm(grid)
    if distance > MASK_GRID_TOLERANCE_MM:
        raise InputError(f"mask is {distance:.3g} mm off the image grid; rule: a mask is on the image's grid",
                         file=str(path))
    value = item.data.get("mask_value")
    return image.voxels == value if value is not None else image.voxels != 0


def export_package(out: PathLike, document: AnnotationDocument, template: LabelTemplate, *,
                   task: Optional[TaskDefinition] = None, source_dir: Optional[PathLike] = None,
                   masks: Optional[Mapping[str, np.ndarray]] = None, layout: str = "per_mask",
                   as_zip: bool = False, audit: Optional[PathLike] = None) -> Path:
    """Write a package to the new folder (or ``.zip`` file) ``out`` and return its path.

    Mask voxels come from ``masks`` (annotation id -> ``[k, j, i]`` array) or from the document's
    mask files relative to ``source_dir``. The document is checked against the template and the
    geometry first; nothing is written when it has a problem. A labelmap layout refuses
    overlapping masks (a voxel has one value): use ``per_mask`` for nested structures.

    ``audit`` (an ``audit.jsonl``) ships the case's audit trail with its head (R-5.6): it is
    verified first, copied, listed in the manifest and checked again by :func:`verify_package`.
    """
    if layout not in LAYOUTS:
        raise InputError(f"{layout!r} is not one of {', '.join(LAYOUTS)}", field="layout")
    problems = document_problems_against_template(document, template)
    problems += document_problems_against_geometry(document, None)
    if task is not None and task.task_id != document.task_id:
        problems.append(f"task_id: the document belongs to {document.task_id}, the task is {task.task_id}")
    if problems:
        raise DocumentError(problems)
    source = Path(source_dir) if source_dir is not None else Path.cwd()
    grid = document.image.geometry
    trail_events = None
    trail_source = audit
    trail_bytes = (b"", b"")
    if trail_source is not None:
        from .provenance.audit import AuditTrail, head_path

        if not Path(trail_source).is_file():
            raise InputError("no such audit trail", file=str(trail_source))
        # read under the trail's lock (an append cannot slip in between the check and the copy);
        # a broken trail is refused, naming its first broken event
        if os.access(trail_source, os.W_OK):
            with AuditTrail(trail_source).transaction() as tx:
                trail_events = list(tx.events)
                trail_bytes = (Path(trail_source).read_bytes(), head_path(trail_source).read_bytes())
        else:  # a read-only trail (a release's copy) takes no appends: no lock needed
            from .provenance.audit import read_trail

            trail_bytes = (Path(trail_source).read_bytes(), head_path(trail_source).read_bytes())
            trail_events = read_trail(trail_source)
        if not trail_events:
            raise InputError("the audit trail is empty", file=str(trail_source))
    target = Path(out)
    if as_zip and target.exists():
        raise InputError("exists; packages never overwrite, choose a new name", file=str(target))
    staging = None
    if as_zip:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".mmanno-package-", dir=str(target.parent)))
    context = atomic_directory(target) if not as_zip else _nullcontext(staging)
    try:
        with context as root:
            annotations = []
            mask_items = [a for a in document.annotations if a.type == "mask"]
            if layout == "labelmap" and mask_items:
                dtype = np.uint8 if max(template.value_of(a.label_code, a.instance) for a in mask_items) < 256 \
                    else np.uint16
                labelmap = np.zeros(grid.array_shape, dtype=dtype)
                owner: Dict[int, str] = {}
                for item in mask_items:
                    value = template.value_of(item.label_code, item.instance)
                    if value in owner:
                        raise InputError(f"{item.id} and {owner[value]} both have labelmap value {value}; use the "
                                         "per_mask layout or number the instances", field="layout")
                    voxels = _mask_of(document, item.id, source, masks)
                    clash = voxels & (labelmap != 0)
                    if np.any(clash):
                        other = owner[int(labelmap[clash][0])]
                        raise InputError(f"{item.id} overlaps {other} in {int(clash.sum())} voxels; a labelmap holds "
                                         "one value per voxel, use the per_mask layout", field="layout")
                    labelmap[voxels] = value
                    owner[value] = item.id
                write_nifti(root / LABELMAP, labelmap, grid, label_map=True, description=f"{template.id} labels")
            for item in document.annotations:
                if item.type != "mask":
                    annotations.append(item)
                    continue
                if layout == "labelmap":
                    annotations.append(item.with_data(mask_file=LABELMAP,
                                                      mask_value=template.value_of(item.label_code, item.instance)))
                    continue
                voxels = _mask_of(document, item.id, source, masks)
                relative = f"masks/{item.id}.nii.gz"
                write_nifti(root / relative, voxels.astype(np.uint8), grid, label_map=True, description=item.label_code)
                annotations.append(item.with_data(mask_file=relative, mask_value=None))
            audit_log = list(document.metadata.get("audit", []))
            audit_log.append({"time": now_utc(), "actor": "MultiModalAnnotation", "action": "exported",
                          "detail": f"package layout {layout}"})
            fusion = _copy_fusion_files(document.fusion, source, root) if document.fusion is not None else None
            exported = document.replace(annotations=annotations, metadata={**document.metadata, "audit": audit_log},
                                        fusion=fusion)
            from .documents import write_document

            write_document(str(root / DOCUMENT), exported)
            write_json_atomic(root / TEMPLATE, template.to_dict())
            if task is not None:
                write_json_atomic(root / TASK, task.to_dict())
            if trail_events:
                (root / AUDIT_TRAIL).write_bytes(trail_bytes[0])
                (root / AUDIT_HEAD).write_bytes(trail_bytes[1])
            files = sorted(p for p in root.rglob("*") if p.is_file())
            manifest: Dict[str, Any] = {
                "schema": schema_id("package-manifest"), "created": now_utc(),
                "software": {"name": "MultiModalAnnotation", "version": __version__},
                "document": DOCUMENT, "template": TEMPLATE}
            if task is not None:
                manifest["task"] = TASK
            manifest["layout"] = layout
            if trail_events:
                manifest["audit"] = {"trail": AUDIT_TRAIL, "head": AUDIT_HEAD, "events": len(trail_events),
                                     "last_hash": trail_events[-1]["hash"]}
            manifest["files"] = [{"path": p.relative_to(root).as_posix(), "sha256": sha256_file(p),
                                  "bytes": p.stat().st_size} for p in files]
            write_json_atomic(root / MANIFEST, manifest)
            if as_zip:
                with atomic_path(target) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as archive:
                    for p in sorted(q for q in root.rglob("*") if q.is_file()):
                        archive.write(p, p.relative_to(root).as_posix())
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
    return target


FUSION_DIR = "fusion"


def _copy_fusion_files(fusion: Mapping[str, Any], source: Path, root: Path) -> Dict[str, Any]:
    """Copy the transform files (and preview) of a fusion record into ``root/fusion/`` after checking
    each against its recorded SHA-256; return the record with package-relative paths (R-8.4.1.2)."""
    import copy

    record = copy.deepcopy(dict(fusion))
    used: Dict[str, str] = {}
    for n, item in enumerate(record["moving"]):
        src = resolve_inside(source, item["transform_file"])
        if not src.is_file():
            raise InputError("transform file not found", file=str(src), field=f"fusion.moving[{n}].transform_file")
        digest = sha256_file(src)
        if digest != item["transform_sha256"]:
            raise InputError(f"SHA-256 {digest[:12]}... differs from the recorded {item['transform_sha256'][:12]}...; "
                             "rule: the transform file is the one the registration wrote", file=str(src),
                             field=f"fusion.moving[{n}].transform_sha256")
        name = src.name
        if name in used and used[name] != str(src):
            name = f"{item['series_key']}_{name}"
        used[name] = str(src)
        (root / FUSION_DIR).mkdir(exist_ok=True)
        shutil.copyfile(src, root / FUSION_DIR / name)
        item["transform_file"] = f"{FUSION_DIR}/{name}"
    if "preview_file" in record:
        src = resolve_inside(source, record["preview_file"])
        if src.is_file():
            (root / FUSION_DIR).mkdir(exist_ok=True)
            shutil.copyfile(src, root / FUSION_DIR / src.name)
            record["preview_file"] = f"{FUSION_DIR}/{src.name}"
        else:
            del record["preview_file"]
    return record


class _nullcontext:
    def __init__(self, value: Any) -> None:
        self.value = value

    def __enter__(self) -> Any:
        return self.value

    def __exit__(self, *exc: Any) -> None:
        return None


# --------------------------------------------------------------------------- verify
def _zip_entries(path: Path) -> Tuple[Dict[str, Tuple[str, int]], List[str], Optional[bytes]]:
    """(name -> (sha256, size), unsafe names, manifest bytes) of a package zip."""
    import hashlib

    entries: Dict[str, Tuple[str, int]] = {}
    unsafe: List[str] = []
    manifest = None
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise InputError(f"not a readable zip file ({exc})", file=str(path)) from exc
    with archive:
        for info in archive.infolist():
            if info.is_dir():
                continue
            name = info.filename
            reason = unsafe_path_reason(name)
            is_link = (info.external_attr >> 16) & 0o170000 == 0o120000
            if reason or is_link:
                unsafe.append(f"{name} ({reason or 'symbolic link'})")
                continue
            data = archive.read(info)
            if name == MANIFEST:
                manifest = data
                continue
            entries[name] = (hashlib.sha256(data).hexdigest(), len(data))
    return entries, unsafe, manifest


def _folder_entries(root: Path) -> Tuple[Dict[str, Tuple[str, int]], List[str], Optional[bytes]]:
    entries: Dict[str, Tuple[str, int]] = {}
    unsafe: List[str] = []
    base = root.resolve()
    for dirpath, dirnames, filenames in os.walk(root):
        for name in list(dirnames) + filenames:
            path = Path(dirpath) / name
            relative = path.relative_to(root).as_posix()
            if path.is_symlink():
                target = path.resolve()
                if target != base and base not in target.parents:
                    unsafe.append(f"{relative} (link to {os.readlink(path)} outside the package)")
                    if name in dirnames:
                        dirnames.remove(name)
                    continue
            if name in filenames and relative != MANIFEST:
                entries[relative] = (sha256_file(path), path.stat().st_size)
    manifest_path = root / MANIFEST
    manifest = manifest_path.read_bytes() if manifest_path.is_file() else None
    return entries, unsafe, manifest


def verify_package(path: PathLike) -> VerifyReport:
    """Recompute every digest of a package folder or zip against its manifest."""
    import json

    target = Path(path)
    if not target.exists():
        raise InputError("no such package", file=str(target))
    entries, unsafe, raw = _zip_entries(target) if target.is_file() else _folder_entries(target)
    if raw is None:
        raise InputError(f"no {MANIFEST}; not an export package", file=str(target))
    try:
        manifest = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"{MANIFEST} is not valid JSON ({exc})", file=str(target)) from exc
    problems = schema_problems("package-manifest", manifest)
    if problems:
        raise InputError(f"{MANIFEST} {problems[0]}", file=str(target))
    report = VerifyReport(unsafe=unsafe, n_files=len(manifest["files"]))
    listed = set()
    for item in manifest["files"]:
        name = item["path"]
        listed.add(name)
        reason = unsafe_path_reason(name)
        if reason:
            report.unsafe.append(f"{name} in the manifest ({reason})")
            continue
        if name not in entries:
            if not any(u.startswith(name + " ") for u in unsafe):
                report.missing.append(name)
            continue
        digest, size = entries[name]
        if digest != item["sha256"] or size != item["bytes"]:
            report.changed.append(name)
    report.extra = sorted(set(entries) - listed)
    report.changed.sort()
    report.missing.sort()
    if manifest.get("audit"):
        report.audit = _audit_problems(target, manifest["audit"])
    return report


def _audit_problems(target: Path, entry: Dict[str, Any]) -> List[str]:
    """The shipped trail verifies and is the one the manifest records (events, last hash)."""
    from .provenance.audit import verify_trail

    folder = Path(tempfile.mkdtemp(prefix=".mmanno-audit-")) if target.is_file() else target
    try:
        if target.is_file():
            with zipfile.ZipFile(target) as archive:
                for name in (entry["trail"], entry["head"]):
                    if name in archive.namelist():
                        (folder / name).write_bytes(archive.read(name))
        if not (folder / entry["trail"]).is_file():
            return [f"{entry['trail']} is missing"]
        result = verify_trail(folder / entry["trail"])
        if not result.ok:
            return [f"event {result.first_broken}: {result.problem}"]
        if (result.n_events, result.last_hash) != (entry["events"], entry["last_hash"]):
            return [f"the trail has {result.n_events} events ending {str(result.last_hash)[:12]}, the manifest "
                    f"records {entry['events']} ending {entry['last_hash'][:12]}"]
        return []
    finally:
        if target.is_file():
            shutil.rmtree(folder, ignore_errors=True)


# --------------------------------------------------------------------------- read
def read_package(path: PathLike, verify: bool = True) -> AnnotationPackage:
    """Read a package folder or zip (verified first unless ``verify`` is False)."""
    target = Path(path)
    if verify:
        report = verify_package(target)
        if not report.ok:
            raise InputError(f"package does not match its manifest: {'; '.join(report.lines()[:5])}",
                             file=str(target), field=MANIFEST)
    if target.is_file():
        extracted = Path(tempfile.mkdtemp(prefix=".mmanno-read-"))
        try:
            with zipfile.ZipFile(target) as archive:
                for info in archive.infolist():
                    if info.is_dir() or unsafe_path_reason(info.filename):
                        continue
                    destination = resolve_inside(extracted, info.filename)
                    destination.parent.mkdir(parents=True, exist_ok=True)
                    destination.write_bytes(archive.read(info))
            package = _read_folder(extracted)
            package.root = target
            return package
        finally:
            shutil.rmtree(extracted, ignore_errors=True)
    return _read_folder(target)


def _read_folder(root: Path) -> AnnotationPackage:
    manifest = read_json(str(root / MANIFEST))
    template = read_template_file(str(resolve_inside(root, manifest.get("template", TEMPLATE))))
    document = read_document(str(resolve_inside(root, manifest.get("document", DOCUMENT))), template)
    task = read_task(str(resolve_inside(root, manifest["task"]))) if manifest.get("task") else None
    masks: Dict[str, MaskArray] = {}
    cache: Dict[str, Any] = {}
    for item in document.annotations:
        if item.type != "mask":
            continue
        relative = str(item.data["mask_file"])
        if relative not in cache:
            cache[relative] = read_nifti(resolve_inside(root, relative))
        image = cache[relative]
        value = item.data.get("mask_value")
        voxels = image.voxels == value if value is not None else image.voxels != 0
        masks[item.id] = MaskArray(np.ascontiguousarray(voxels), image.geometry)
    return AnnotationPackage(root=root, document=document, template=template, task=task, masks=masks,
                             manifest=manifest)
