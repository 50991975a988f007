"""QC inputs that only MultiModalAnnotation can read: annotation export packages (R-6.11, R-10.2).

QCMetrics must not import this package (ARCHITECTURE.md), so the reader is registered into
:mod:`QCMetricsLib.readers` by :func:`install`, which the ``mmanno`` command line (and the
MultiModalAnnotation module) call at start-up. ``qc compare PACKAGE TEST`` then compares the
package's mask annotations, matched by template code: a numbered instance ``METASTASIS`` #3 is
the code ``METASTASIS_3``, as the template's label set names it.
"""

from __future__ import annotations

import os
import zipfile
from typing import Dict, List, Optional

import numpy as np

from QCMetricsLib.readers import READERS, LabeledVolume, LabelEntry, register_reader
from RTSSBridgeLib.errors import InputError

from .package import DOCUMENT, MANIFEST, read_package


class AnnotationPackageReader:
    """An export package folder or zip: its mask annotations on the document's image grid."""

    name = "annotation-package"
    description = "an annotation export package (folder or .zip with manifest.json and annotation.json)"

    def can_read(self, path: str, series: Optional[str] = None) -> bool:
        if os.path.isdir(path):
            return os.path.isfile(os.path.join(path, MANIFEST)) and os.path.isfile(os.path.join(path, DOCUMENT))
        if os.path.isfile(path) and zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                names = set(archive.namelist())
            return MANIFEST in names and DOCUMENT in names
        return False

    def read(self, path: str, series: Optional[str] = None) -> LabeledVolume:
        package = read_package(path)  # verified against its manifest first
        geometry = package.document.image.geometry
        masks: Dict[int, np.ndarray] = {}
        labels: List[LabelEntry] = []
        notes: List[str] = []
        mask_annotations = [a for a in package.document.annotations if a.type == "mask"]
        for number, annotation in enumerate(mask_annotations, start=1):
            mask = package.masks[annotation.id]
            if not mask.geometry.isclose(geometry, 1e-3):
                raise InputError(f"mask of {annotation.id} is not on the document's image grid", file=path,
                                 field="annotations")
            code = (f"{annotation.label_code}_{annotation.instance}" if annotation.instance is not None
                    else annotation.label_code)
            masks[number] = mask.voxels
            labels.append(LabelEntry(number, annotation.id, code))
        other = len(package.document.annotations) - len(mask_annotations)
        if other:
            notes.append(f"{other} non-mask annotation(s) (points, boxes, polygons, attributes) are not compared")
        return LabeledVolume(path, geometry, labels, masks=masks, values_are_codes=False, reader=self.name,
                             notes=notes)


def install() -> None:
    """Register the package reader with QCMetrics once (idempotent)."""
    if not any(reader.name == AnnotationPackageReader.name for reader in READERS):
        register_reader(AnnotationPackageReader(), first=True)
