"""Masks on different grids are compared in physical space (R-10.2 "between modalities"): the test
labels are resampled onto the reference grid by nearest neighbour, and the report says so.

The mapping from a reference voxel to the test grid goes through the one geometry home
(:meth:`ImageGeometry.ijk_to_lps_matrix` / :meth:`ImageGeometry.lps_to_ijk_matrix`); the
interpolation is ``scipy.ndimage.affine_transform`` with ``order=0`` (nearest neighbour), and
voxels mapping outside the test grid become background.
"""

from __future__ import annotations

from typing import Dict

import numpy as np
from scipy import ndimage

from RTSSBridgeLib.geometry import ImageGeometry

from .readers import LabeledVolume

#: Geometries closer than this (mm at every corner voxel) are the same grid.
SAME_GRID_TOLERANCE_MM = 1e-3
_REVERSE = np.array([[0, 0, 1, 0], [0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1]], dtype=np.float64)


def index_map_kji(source: ImageGeometry, target: ImageGeometry) -> np.ndarray:
    """4x4 matrix taking a target voxel index (k, j, i, 1) to the source's continuous index."""
    ijk = source.lps_to_ijk_matrix() @ target.ijk_to_lps_matrix()
    return _REVERSE @ ijk @ _REVERSE


def resample_array(voxels: np.ndarray, source: ImageGeometry, target: ImageGeometry) -> np.ndarray:
    """``voxels`` (on ``source``) sampled at the voxel centres of ``target``, nearest neighbour."""
    matrix = index_map_kji(source, target)
    data = voxels.astype(np.uint8) if voxels.dtype == np.bool_ else voxels
    out = ndimage.affine_transform(data, matrix[:3, :3], offset=matrix[:3, 3], output_shape=target.array_shape,
                                   order=0, mode="constant", cval=0, prefilter=False)
    return out.astype(bool) if voxels.dtype == np.bool_ else out


def same_grid(a: ImageGeometry, b: ImageGeometry) -> bool:
    return a.isclose(b, SAME_GRID_TOLERANCE_MM)


def resample_volume(volume: LabeledVolume, target: ImageGeometry) -> LabeledVolume:
    """``volume`` on the grid ``target`` (itself when the grids are the same)."""
    if same_grid(volume.geometry, target):
        return volume
    note = ("resampled onto the reference grid in physical space (nearest neighbour) from "
            f"{'x'.join(map(str, volume.geometry.shape))} at "
            f"{', '.join(f'{s:.4g}' for s in volume.geometry.spacing_mm)} mm")
    if volume.labelmap is not None:
        labelmap = resample_array(volume.labelmap, volume.geometry, target)
        out = LabeledVolume(volume.source, target, list(volume.labels), labelmap=labelmap,
                            values_are_codes=volume.values_are_codes, reader=volume.reader,
                            notes=[*volume.notes, note])
    else:
        masks: Dict[int, np.ndarray] = {v: resample_array(m, volume.geometry, target)
                                        for v, m in (volume.masks or {}).items()}
        out = LabeledVolume(volume.source, target, list(volume.labels), masks=masks,
                            values_are_codes=volume.values_are_codes, reader=volume.reader,
                            notes=[*volume.notes, note])
    if volume.image is not None:
        out.image = resample_array(volume.image, volume.geometry, target)
    return out
