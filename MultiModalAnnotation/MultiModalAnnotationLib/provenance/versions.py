"""Versions of an annotation (R-6.8 "the original versions are kept", R-6.10): content-addressed,
never overwritten, compared label by label.

Store: ``<case>/objects/<sha256>`` holds every file ever saved, named by the SHA-256 of its bytes
and made read-only; a file is stored once however many versions hold it, and reading checks the
bytes against the name. A **version** is a *tree* object (RFC 8785 canonical JSON, schema
``version-tree`` v1) listing its files with their digests::

    {"schema": ".../version-tree/v1", "files": [{"path": "annotation.json", "sha256": ..., "bytes": ...},
                                                 {"path": "masks/NODULE_01.nii.gz", ...}]}

The SHA-256 of the tree is the version's content hash (the ``after`` of its audit event). The
annotation document's masks are written one NIfTI per mask annotation (``masks/<id>.nii.gz``,
nibabel writes gzip without a time stamp, so equal masks give equal bytes).

:func:`diff_versions` lists annotations and labels added and removed, every changed attribute
and geometry value, and for each mask its Dice and volume change (QCMetrics kernels and metric
registry: the same numbers the QC report prints).
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Union

import numpy as np

from RTSSBridgeLib.errors import InputError
from RTSSBridgeLib.fileio import atomic_path
from RTSSBridgeLib.nifti import read_nifti, write_nifti

from ..documents import AnnotationDocument, document_from_dict, document_problems
from ..schemas import schema_id, schema_problems
from .canonical import canonical_json, sha256_hex

TREE_SCHEMA = "version-tree"
DOCUMENT_PATH = "annotation.json"
READ_ONLY = stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH
PathLike = Union[str, "os.PathLike[str]"]


class StoreError(InputError):
    """An object of the version store is missing or its bytes do not match its name.
    Remedy: restore the object from a package or release; never edit files below objects/."""


def make_read_only(path: Path) -> None:
    """Clear every write bit (files of the store and of frozen releases)."""
    mode = path.stat().st_mode
    path.chmod(mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def is_read_only(path: Path) -> bool:
    return not (path.stat().st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


class ObjectStore:
    """Content-addressed files below ``root`` (``root/<sha256>``)."""

    def __init__(self, root: PathLike) -> None:
        self.root = Path(root)

    def path(self, digest: str) -> Path:
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise StoreError(f"{digest!r} is not a SHA-256 digest", field="object")
        return self.root / digest

    def has(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def put_bytes(self, data: bytes) -> str:
        digest = sha256_hex(data)
        target = self.path(digest)
        if target.is_file():
            if sha256_hex(target.read_bytes()) != digest:
                raise StoreError("an object's bytes do not match its name (the store was edited)", file=str(target))
            return digest
        self.root.mkdir(parents=True, exist_ok=True)
        with atomic_path(target) as tmp:
            tmp.write_bytes(data)
            os.chmod(tmp, READ_ONLY)
        return digest

    def get_bytes(self, digest: str) -> bytes:
        target = self.path(digest)
        if not target.is_file():
            raise StoreError("missing object", file=str(target))
        data = target.read_bytes()
        if sha256_hex(data) != digest:
            raise StoreError("the object's bytes do not match its name (changed after it was stored)",
                             file=str(target))
        return data

    def put_json(self, value: Any) -> str:
        return self.put_bytes(canonical_json(value))

    def get_json(self, digest: str) -> Any:
        return json.loads(self.get_bytes(digest).decode("utf-8"))

    def problems(self) -> List[str]:
        """Every object whose bytes do not match its name, or that is writable."""
        found: List[str] = []
        if not self.root.is_dir():
            return found
        for path in sorted(self.root.iterdir()):
            if path.name.startswith("."):
                continue
            if sha256_hex(path.read_bytes()) != path.name:
                found.append(f"{path.name}: bytes do not match the name")
            elif not is_read_only(path):
                found.append(f"{path.name}: writable")
        return found


# --------------------------------------------------------------------------- versions
@dataclass(frozen=True)
class VersionContent:
    """A version read back: the document (mask paths ``masks/<id>.nii.gz``) and its masks."""

    tree: str
    document: AnnotationDocument
    masks: Dict[str, np.ndarray]
    files: Dict[str, str]  # path -> sha256


def document_bytes(document: AnnotationDocument) -> bytes:
    """The bytes a version stores for a document (validated; pretty JSON, UTF-8, newline)."""
    data = document.to_dict()
    problems = document_problems(data)
    if problems:
        from ..documents import DocumentError

        raise DocumentError(problems)
    return (json.dumps(data, indent=2, ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8")


def _mask_bytes(voxels: np.ndarray, document: AnnotationDocument, label_code: str) -> bytes:
    folder = tempfile.mkdtemp(prefix=".mmanno-mask-")
    try:
        path = os.path.join(folder, "mask.nii.gz")
        write_nifti(path, np.asarray(voxels).astype(np.uint8), document.image.geometry, label_map=True,
                    description=label_code)
        with open(path, "rb") as fh:
            return fh.read()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def store_version(store: ObjectStore, document: AnnotationDocument, masks: Mapping[str, np.ndarray]) -> str:
    """Store a document and its masks (``annotation id -> bool [k, j, i]``); return the tree digest."""
    grid = document.image.geometry
    files: List[Dict[str, Any]] = []
    annotations = []
    for item in document.annotations:
        if item.type != "mask":
            annotations.append(item)
            continue
        if item.id not in masks:
            raise InputError(f"no voxels for mask annotation {item.id}", field=f"masks.{item.id}")
        voxels = np.asarray(masks[item.id]).astype(bool)
        if voxels.shape != grid.array_shape:
            raise InputError(f"mask shape {list(voxels.shape)} is not the image's [k, j, i] {list(grid.array_shape)}",
                             field=f"masks.{item.id}")
        data = _mask_bytes(voxels, document, item.label_code)
        relative = f"masks/{item.id}.nii.gz"
        files.append({"path": relative, "sha256": store.put_bytes(data), "bytes": len(data)})
        annotations.append(item.with_data(mask_file=relative, mask_value=None))
    stored = document.replace(annotations=annotations)
    data = document_bytes(stored)
    files.insert(0, {"path": DOCUMENT_PATH, "sha256": store.put_bytes(data), "bytes": len(data)})
    return store.put_json({"schema": schema_id(TREE_SCHEMA), "files": files})


def read_tree(store: ObjectStore, tree: str) -> Dict[str, str]:
    data = store.get_json(tree)
    problems = schema_problems(TREE_SCHEMA, data)
    if problems:
        raise StoreError(f"version tree {tree[:12]} breaks its schema: {problems[0]}", field="tree")
    return {f["path"]: f["sha256"] for f in data["files"]}


def load_version(store: ObjectStore, tree: str) -> VersionContent:
    """Read a version back (every object checked against its digest)."""
    files = read_tree(store, tree)
    document = document_from_dict(json.loads(store.get_bytes(files[DOCUMENT_PATH]).decode("utf-8")),
                                  file=f"objects/{files[DOCUMENT_PATH]}")
    masks: Dict[str, np.ndarray] = {}
    folder = tempfile.mkdtemp(prefix=".mmanno-version-")
    try:
        for item in document.annotations:
            if item.type != "mask":
                continue
            digest = files.get(str(item.data["mask_file"]))
            if digest is None:
                raise StoreError(f"version {tree[:12]}: {item.data['mask_file']} is not in its tree", field="tree")
            path = os.path.join(folder, f"{digest}.nii.gz")
            with open(path, "wb") as fh:
                fh.write(store.get_bytes(digest))
            image = read_nifti(path)
            value = item.data.get("mask_value")
            masks[item.id] = np.ascontiguousarray(image.voxels == value if value is not None else image.voxels != 0)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return VersionContent(tree, document, masks, files)


def checkout(store: ObjectStore, tree: str, folder: PathLike, previous: Optional[str] = None) -> List[Path]:
    """Write the files of version ``tree`` into ``folder`` (atomically, file by file), removing the
    files of the ``previous`` version that the new one does not have. Returns the paths written."""
    root = Path(folder)
    files = read_tree(store, tree)
    written = []
    for relative, digest in files.items():
        target = root / relative
        with atomic_path(target) as tmp:
            tmp.write_bytes(store.get_bytes(digest))
        written.append(target)
    if previous:
        for relative in set(read_tree(store, previous)) - set(files):
            stale = root / relative
            if stale.is_file():
                stale.unlink()
    return written


# --------------------------------------------------------------------------- diff
def _flat(value: Any, prefix: str) -> Dict[str, Any]:
    if isinstance(value, Mapping):
        out: Dict[str, Any] = {}
        for key, item in value.items():
            out.update(_flat(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: value}


def mask_change(before: np.ndarray, after: np.ndarray, document: AnnotationDocument) -> Dict[str, Any]:
    """Dice and volume change of one mask between two versions (QCMetrics' kernels and registry)."""
    from QCMetricsLib.kernels import pair_statistics
    from QCMetricsLib.metrics import MetricOptions, metric

    g = document.image.geometry
    stats = pair_statistics(before, after, g.spacing_mm, g.direction_matrix, with_surfaces=False)
    options = MetricOptions()
    values = {name: metric(name).compute(stats, options) for name in
              ("dice", "volume_ref_ml", "volume_test_ml", "volume_difference_ml", "relative_volume_difference")}
    return {"dice": values["dice"].json_value(), "volume_before_ml": values["volume_ref_ml"].json_value(),
            "volume_after_ml": values["volume_test_ml"].json_value(),
            "volume_change_ml": values["volume_difference_ml"].json_value(),
            "relative_volume_change": values["relative_volume_difference"].json_value(),
            "voxels_added": int(stats.counts.fp), "voxels_removed": int(stats.counts.fn)}


def diff_contents(a: VersionContent, b: VersionContent) -> Dict[str, Any]:
    """What changed from version ``a`` to version ``b`` (see the module docstring)."""
    before = {item.id: item for item in a.document.annotations}
    after = {item.id: item for item in b.document.annotations}
    labels_a = {item.label_code for item in a.document.annotations}
    labels_b = {item.label_code for item in b.document.annotations}
    changed: List[Dict[str, Any]] = []
    masks: List[Dict[str, Any]] = []
    for ident in [i for i in after if i in before]:
        old, new = before[ident], after[ident]
        changes = []
        for key in ("label_code", "category", "type", "instance", "uncertain"):
            if getattr(old, key) != getattr(new, key):
                changes.append({"field": key, "before": getattr(old, key), "after": getattr(new, key)})
        skip = ("mask_file", "mask_value")
        flat_old = {k: v for k, v in _flat(dict(old.data), "").items() if k not in skip}
        flat_new = {k: v for k, v in _flat(dict(new.data), "").items() if k not in skip}
        for key in sorted(set(flat_old) | set(flat_new)):
            if flat_old.get(key) != flat_new.get(key):
                changes.append({"field": key, "before": flat_old.get(key), "after": flat_new.get(key)})
        if ident in a.masks and ident in b.masks and not np.array_equal(a.masks[ident], b.masks[ident]):
            entry = {"id": ident, "label_code": new.label_code, **mask_change(a.masks[ident], b.masks[ident],
                                                                              b.document)}
            masks.append(entry)
            changes.append({"field": "mask", "before": None, "after": f"Dice {entry['dice']:.4f}"})
        if changes:
            changed.append({"id": ident, "label_code": new.label_code, "changes": changes})
    meta_a = _flat(dict(a.document.metadata), "")
    meta_b = _flat(dict(b.document.metadata), "")
    return {
        "from": a.tree, "to": b.tree, "same": a.tree == b.tree,
        "annotations_added": [i for i in after if i not in before],
        "annotations_removed": [i for i in before if i not in after],
        "labels_added": sorted(labels_b - labels_a), "labels_removed": sorted(labels_a - labels_b),
        "changed": changed, "masks": masks,
        "metadata_changed": sorted(k for k in set(meta_a) | set(meta_b) if meta_a.get(k) != meta_b.get(k)
                                   and not k.startswith("audit")),
    }


def diff_versions(store: ObjectStore, tree_a: str, tree_b: str) -> Dict[str, Any]:
    return diff_contents(load_version(store, tree_a), load_version(store, tree_b))


def diff_lines(diff: Mapping[str, Any]) -> List[str]:
    """The diff as text, one change per line (what ``mmanno case history --diff`` prints)."""
    lines = [f"+ annotation {i}" for i in diff["annotations_added"]]
    lines += [f"- annotation {i}" for i in diff["annotations_removed"]]
    for entry in diff["changed"]:
        for change in entry["changes"]:
            if change["field"] == "mask":
                continue
            lines.append(f"~ {entry['id']} {change['field']}: {change['before']!r} -> {change['after']!r}")
    for m in diff["masks"]:
        lines.append(f"~ {m['id']} mask: Dice {m['dice']:.4f}, volume {m['volume_before_ml']:.3f} -> "
                     f"{m['volume_after_ml']:.3f} ml ({m['volume_change_ml']:+.3f} ml)")
    return lines or ["no change"]


def tree_problems(store: ObjectStore, tree: str) -> List[str]:
    """Problems of one version: missing or changed objects."""
    try:
        files = read_tree(store, tree)
    except InputError as exc:
        return [str(exc)]
    problems = []
    for relative, digest in files.items():
        try:
            store.get_bytes(digest)
        except StoreError as exc:
            problems.append(f"{relative}: {exc.rule}")
    return problems


def file_digests(folder: PathLike) -> Dict[str, str]:
    """SHA-256 of every file below ``folder`` by relative POSIX path."""
    from RTSSBridgeLib.fileio import sha256_file

    root = Path(folder)
    return {p.relative_to(root).as_posix(): sha256_file(p) for p in sorted(root.rglob("*")) if p.is_file()}


def read_only_problems(folder: PathLike) -> List[str]:
    root = Path(folder)
    return [f"{p.relative_to(root).as_posix()}: writable" for p in sorted(root.rglob("*"))
            if p.is_file() and not is_read_only(p)]


__all__ = ["ObjectStore", "StoreError", "VersionContent", "checkout", "diff_contents", "diff_lines", "diff_versions",
           "file_digests", "load_version", "mask_change", "store_version", "tree_problems"]

