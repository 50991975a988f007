"""Registration inputs: a DICOM series folder or a NIfTI file as voxels + exact geometry (R-7.4).

Every LPS/RAS/IJK conversion goes through :class:`RTSSBridgeLib.geometry.ImageGeometry`;
SimpleITK images are built from its spacing, origin (LPS) and direction (columns = i, j, k axes,
ITK's convention), so a SimpleITK physical point is an LPS point in millimetres.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Optional, Union

import numpy as np

from RTSSBridgeLib.errors import InputError
from RTSSBridgeLib.geometry import ImageGeometry

if TYPE_CHECKING:
    import SimpleITK as sitk

PathLike = Union[str, "os.PathLike[str]"]


@dataclass
class FusionImage:
    """A scalar volume ``[k, j, i]`` on ``geometry`` with what is known of its origin."""

    voxels: np.ndarray
    geometry: ImageGeometry
    source: str = ""
    modality: str = ""
    series_instance_uid: str = ""
    frame_of_reference_uid: str = ""
    info: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.voxels.ndim != 3 or tuple(self.voxels.shape) != self.geometry.array_shape:
            raise InputError(f"voxel array shape {list(self.voxels.shape)} is not the geometry's [k, j, i] "
                             f"{list(self.geometry.array_shape)}; rule: one scalar 3-D volume",
                             file=self.source or None, field="voxels")

    def describe(self) -> Dict[str, Any]:
        """JSON description without patient data: modality, UIDs, grid."""
        data: Dict[str, Any] = {"modality": self.modality, "geometry": self.geometry.to_dict()}
        if self.series_instance_uid:
            data["series_instance_uid"] = self.series_instance_uid
        if self.frame_of_reference_uid:
            data["frame_of_reference_uid"] = self.frame_of_reference_uid
        return data

    def with_geometry(self, geometry: ImageGeometry) -> FusionImage:
        """The same voxels placed on another grid of the same shape (tests inject shifts this way)."""
        return FusionImage(self.voxels, geometry, self.source, self.modality, self.series_instance_uid,
                           self.frame_of_reference_uid, dict(self.info))


def read_image(path: PathLike, series_uid: Optional[str] = None) -> FusionImage:
    """A NIfTI file (``.nii``/``.nii.gz``) or the one 3-D series of a DICOM folder.

    A folder holding several series needs ``series_uid``. Colour and single-slice series are
    refused (registration needs a scalar volume).
    """
    from RTSSBridgeLib.nifti import is_nifti_path, read_nifti

    text = os.fspath(path)
    target = Path(text)
    if not target.exists():
        raise InputError("no such file or folder", file=text)
    if target.is_file():
        if not is_nifti_path(text):
            raise InputError("not a NIfTI file (.nii/.nii.gz) nor a DICOM series folder; rule: registration "
                             "inputs are DICOM series folders or NIfTI files", file=text)
        image = read_nifti(text)
        voxels = np.asarray(image.voxels)
        if voxels.ndim != 3:
            raise InputError(f"has {voxels.ndim} dimensions; rule: a scalar 3-D volume", file=text, field="dim")
        return FusionImage(voxels, image.geometry, source=text, modality="", info={"format": "nifti"})
    from RTSSBridgeLib.dicom_series import read_volume, scan_dicom

    scan = scan_dicom(text)
    series = [s for s in scan.series if series_uid is None or s.series_uid == series_uid]
    if not series:
        what = f"series {series_uid}" if series_uid else "loadable image series"
        raise InputError(f"no {what} in the folder", file=text, field="SeriesInstanceUID")
    if len(series) > 1:
        raise InputError(f"{len(series)} series in the folder; name one (series_uid) or give its own folder",
                         file=text, field="SeriesInstanceUID")
    volume = read_volume(series[0])
    voxels = np.asarray(volume.voxels)
    if voxels.ndim != 3:
        raise InputError("is a colour series; rule: a scalar 3-D volume", file=text, field="SamplesPerPixel")
    if voxels.shape[0] < 2:
        raise InputError("has a single slice; rule: a 3-D volume", file=text, field="NumberOfFrames")
    s = series[0]
    return FusionImage(voxels, volume.geometry, source=text, modality=s.modality,
                       series_instance_uid=s.series_uid, frame_of_reference_uid=s.frame_of_reference_uid,
                       info={"format": "dicom"})


def to_sitk(voxels: np.ndarray, geometry: ImageGeometry, dtype: Any = np.float32) -> sitk.Image:
    """A SimpleITK image with the exact grid of ``geometry`` (physical points = LPS mm)."""
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(np.ascontiguousarray(voxels, dtype=dtype))
    image.SetSpacing(geometry.spacing_mm)
    image.SetOrigin(geometry.origin_lps)
    image.SetDirection(tuple(float(v) for v in geometry.direction_matrix.ravel()))  # row-major, columns = axes
    return image


def geometry_of(image: sitk.Image) -> ImageGeometry:
    """The :class:`ImageGeometry` of a SimpleITK image."""
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    return ImageGeometry.from_dict({"shape": list(image.GetSize()), "spacing_mm": list(image.GetSpacing()),
                                    "origin_lps": list(image.GetOrigin()), "direction": direction.tolist()})
