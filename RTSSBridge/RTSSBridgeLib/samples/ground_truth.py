"""Byte-stable writers for sample ground truth: NIfTI labelmaps, JSON, CSV (R-5.7, R-6.11).

A labelmap is written with nibabel on the series grid: ``data[i, j, k] = volume[k, j, i]``,
affine ``geometry.ijk_to_ras_matrix()`` as both sform and qform (code 1, scanner
anatomical). The gzip stream is made here with ``mtime=0`` so the same case is the same bytes.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from pathlib import Path
from typing import Any, Dict, List, Sequence, Union

import nibabel as nib
import numpy as np

from ..geometry import ImageGeometry


def write_labelmap_nifti(path: Union[str, Path], labels_kji: np.ndarray, geometry: ImageGeometry) -> Path:
    """Write a ``uint8``/``uint16`` labelmap stored ``[k, j, i]`` as NIfTI-1 on ``geometry``.

    ``path`` ending in ``.nii.gz`` is gzip-compressed deterministically.
    """
    volume = np.asarray(labels_kji)
    if volume.shape != geometry.array_shape:
        raise ValueError(f"labelmap shape {volume.shape} does not match the grid {geometry.array_shape}")
    dtype = np.uint8 if int(volume.max(initial=0)) < 256 else np.uint16
    data = np.asarray(volume, dtype=dtype).T  # [k, j, i] -> [i, j, k]
    affine = geometry.ijk_to_ras_matrix()
    image = nib.Nifti1Image(data, affine)
    image.set_sform(affine, code=1)
    image.set_qform(affine, code=1)
    image.header.set_xyzt_units("mm")
    image.header.set_data_dtype(dtype)
    image.header["descrip"] = b"mmanno sample ground truth"
    raw = image.to_bytes()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.name.endswith(".gz"):
        out.write_bytes(gzip.compress(raw, compresslevel=6, mtime=0))
    else:
        out.write_bytes(raw)
    return out


def json_text(obj: Any) -> str:
    """Stable JSON text (UTF-8, two-space indent, no NaN)."""
    return json.dumps(obj, indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def write_json(path: Union[str, Path], obj: Any) -> Path:
    """Write ``obj`` as stable JSON."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json_text(obj), encoding="utf-8")
    return out


def write_csv(path: Union[str, Path], header: Sequence[str], rows: List[Dict[str, Any]]) -> Path:
    """Write rows (dicts keyed by ``header``) as a UTF-8 CSV with ``\\n`` line ends."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(header), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(row)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(buffer.getvalue(), encoding="utf-8")
    return out
