"""Cross-modality consistency check and preview montage (R-8.4.1.5).

When one structure is annotated in two modalities (or an AI proposal in one and the human result
in another), both masks are mapped into the reference frame (nearest neighbour through the
registration, reference -> other points as ITK) and compared: centroid distance (mm) and HD95 (mm,
QCMetricsLib's surface-distance kernel and metric). Above the task threshold (default 3 mm,
3-5 mm) the structure is flagged for readjustment.

:func:`preview_montage` draws the region outline on every modality (the reference and each
registered image) through the region's centre - axial, coronal, sagittal - into one PNG.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from RTSSBridgeLib.errors import InputError
from RTSSBridgeLib.fileio import write_bytes_atomic
from RTSSBridgeLib.geometry import ImageGeometry

from .images import to_sitk

PathLike = Union[str, "os.PathLike[str]"]
DEFAULT_THRESHOLD_MM = 3.0


@dataclass
class ConsistencyResult:
    """One structure in two modalities, compared in the reference frame."""

    structure: str
    reference_series: str
    other_series: str
    centroid_distance_mm: float
    hd95_mm: float
    threshold_mm: float
    reference_voxels: int
    other_voxels: int

    @property
    def flagged(self) -> bool:
        return self.centroid_distance_mm > self.threshold_mm or self.hd95_mm > self.threshold_mm

    def reason(self) -> str:
        if not self.flagged:
            return (f"consistent: centroid {self.centroid_distance_mm:.2f} mm, HD95 {self.hd95_mm:.2f} mm "
                    f"<= {self.threshold_mm:g} mm")
        return (f"readjust {self.structure}: centroid {self.centroid_distance_mm:.2f} mm, HD95 {self.hd95_mm:.2f} mm "
                f"between {self.reference_series} and {self.other_series} (threshold {self.threshold_mm:g} mm, "
                "R-8.4.1.5)")

    def to_dict(self) -> Dict[str, Any]:
        return {"structure": self.structure, "reference_series": self.reference_series,
                "other_series": self.other_series, "centroid_distance_mm": round(self.centroid_distance_mm, 4),
                "hd95_mm": round(self.hd95_mm, 4), "threshold_mm": self.threshold_mm, "flagged": self.flagged,
                "reason": self.reason(), "reference_voxels": self.reference_voxels, "other_voxels": self.other_voxels}


def map_mask(mask: np.ndarray, source: ImageGeometry, target: ImageGeometry,
             transform: Optional[Any] = None) -> np.ndarray:
    """``mask`` (on ``source``) on the grid ``target``; ``transform`` maps target points to source
    points (reference -> other, as a registration result); none = the same frame."""
    import SimpleITK as sitk

    reference = to_sitk(np.zeros(target.array_shape, dtype=np.uint8), target, np.uint8)
    t = transform if transform is not None else sitk.Transform(3, sitk.sitkIdentity)
    out = sitk.Resample(to_sitk(np.asarray(mask, dtype=np.uint8), source, np.uint8), reference, t,
                        sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    return sitk.GetArrayFromImage(out).astype(bool)


def centroid_lps(mask: np.ndarray, geometry: ImageGeometry) -> np.ndarray:
    kji = np.argwhere(mask)
    return geometry.ijk_to_lps(kji[:, ::-1].astype(np.float64).mean(axis=0))


def consistency_check(structure: str, reference_mask: np.ndarray, reference_geometry: ImageGeometry,
                      other_mask: np.ndarray, other_geometry: ImageGeometry, transform: Optional[Any] = None, *,
                      threshold_mm: float = DEFAULT_THRESHOLD_MM, reference_series: str = "reference",
                      other_series: str = "other") -> ConsistencyResult:
    """Compare one structure annotated on the reference and on another modality (R-8.4.1.5)."""
    from QCMetricsLib.kernels import pair_statistics
    from QCMetricsLib.metrics import metric
    from QCMetricsLib.options import MetricOptions

    if not 3.0 <= float(threshold_mm) <= 5.0:
        raise InputError(f"must be within 3-5 mm (8.4.1.5), got {threshold_mm}", field="fusion_deviation_mm")
    ref = np.asarray(reference_mask).astype(bool)
    if ref.shape != reference_geometry.array_shape:
        raise InputError(f"reference mask shape {list(ref.shape)} is not the grid's "
                         f"{list(reference_geometry.array_shape)}", field=f"{structure}.reference")
    if np.asarray(other_mask).shape != other_geometry.array_shape:
        raise InputError(f"mask shape {list(np.asarray(other_mask).shape)} is not the grid's "
                         f"{list(other_geometry.array_shape)}", field=f"{structure}.{other_series}")
    other = map_mask(other_mask, other_geometry, reference_geometry, transform)
    if not ref.any() or not other.any():
        empty = reference_series if not ref.any() else other_series
        raise InputError(f"the {structure} mask on {empty} is empty in the reference frame; rule: both annotations "
                         "show the structure", field=f"{structure}.{empty}")
    distance = float(np.linalg.norm(centroid_lps(ref, reference_geometry) - centroid_lps(other, reference_geometry)))
    stats = pair_statistics(ref, other, reference_geometry.spacing_mm, reference_geometry.direction_matrix)
    hd95 = metric("hausdorff95_mm").compute(stats, MetricOptions()).value
    return ConsistencyResult(structure, reference_series, other_series, distance, float(hd95), float(threshold_mm),
                             int(ref.sum()), int(other.sum()))


# --------------------------------------------------------------------------- montage
def _window(values: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(values, [1.0, 99.0])
    if hi <= lo:
        hi = lo + 1.0
    return (np.clip((values - lo) / (hi - lo), 0.0, 1.0) * 255.0).astype(np.uint8)


def _outline(mask: np.ndarray) -> np.ndarray:
    padded = np.pad(mask, 1)
    inner = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~inner


def _views(volume: np.ndarray, centre_kji: Sequence[int]) -> List[np.ndarray]:
    k, j, i = (int(v) for v in centre_kji)
    return [volume[k], volume[::-1, j, :], volume[::-1, :, i]]  # axial, coronal, sagittal (superior up)


def _fit(tile: np.ndarray, size: int) -> np.ndarray:
    """Nearest-neighbour resize of a 2-D tile into a ``size`` square (aspect kept, padded)."""
    h, w = tile.shape[:2]
    scale = size / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    rows = np.minimum((np.arange(nh) / scale).astype(int), h - 1)
    cols = np.minimum((np.arange(nw) / scale).astype(int), w - 1)
    out = np.zeros((size, size, *tile.shape[2:]), dtype=tile.dtype)
    out[:nh, :nw] = tile[rows][:, cols]
    return out


def preview_montage(path: PathLike, images: Sequence[Tuple[str, np.ndarray]], masks: Sequence[np.ndarray],
                    geometry: ImageGeometry, tile: int = 192) -> Path:
    """One PNG: a row per modality (``images``: (name, volume on ``geometry``)), axial / coronal /
    sagittal through the centre of the first mask, every mask outlined (first red, others green,
    blue...). Anisotropic slices are shown on an isotropic scale."""
    from QCMetricsLib.report import png_bytes

    if not images or not masks:
        raise InputError("needs at least one image and one mask", field="montage")
    first = np.asarray(masks[0]).astype(bool)
    if not first.any():
        raise InputError("the first mask is empty", field="montage")
    centre = np.round(np.argwhere(first).mean(axis=0)).astype(int)
    colours = [(255, 40, 40), (40, 230, 40), (60, 140, 255), (255, 220, 0)]
    sp = geometry.spacing_mm  # (i, j, k)
    aspects = [(sp[1], sp[0]), (sp[2], sp[0]), (sp[2], sp[1])]  # row, column spacing of each view
    rows = []
    for _name, volume in images:
        if np.asarray(volume).shape != geometry.array_shape:
            raise InputError(f"image {_name} is not on the montage grid", field="montage")
        grey = _window(np.asarray(volume, dtype=np.float32))
        tiles = []
        for view, (dr, dc) in zip(range(3), aspects):
            g = _views(grey, centre)[view]
            rgb = np.repeat(g[:, :, None], 3, axis=2)
            for n, mask in enumerate(masks):
                outline = _outline(_views(np.asarray(mask).astype(bool), centre)[view])
                rgb[outline] = colours[n % len(colours)]
            # isotropic display: repeat rows/columns by their spacing ratio
            ratio = dr / dc
            if abs(ratio - 1.0) > 0.05:
                idx = np.minimum((np.arange(round(rgb.shape[0] * ratio)) / ratio).astype(int), rgb.shape[0] - 1)
                rgb = rgb[idx]
            tiles.append(_fit(rgb, tile))
        rows.append(np.concatenate(tiles, axis=1))
    picture = np.concatenate(rows, axis=0)
    return write_bytes_atomic(path, png_bytes(picture))
