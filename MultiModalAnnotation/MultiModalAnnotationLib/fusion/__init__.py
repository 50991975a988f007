"""Registration-checked fused annotation (R-8.4.1, R-7.4, R-6.5).

* :mod:`.images` - read a DICOM series folder or a NIfTI file as (voxels, geometry) and hand it to
  SimpleITK with the exact geometry of :class:`RTSSBridgeLib.geometry.ImageGeometry`.
* :mod:`.registration` - rigid / affine / B-spline registration on SimpleITK (Mattes mutual
  information, multi-resolution, geometry or moments initialisation, fixed sampling seed); the
  transform file (``.h5``/``.tfm``) and its 4x4 matrices in LPS and RAS.
* :mod:`.accuracy` - registration error: landmark TRE, image-based residual, PET-CT body-outline
  alignment check (8.4.1.3).
* :mod:`.guard` - the fusion guard: annotation on a non-reference modality only on its registered
  image and only when the registration passes the task threshold (8.4.1.4).
* :mod:`.consistency` - cross-modality consistency (centroid distance, HD95) and preview montage
  (8.4.1.5).
* :mod:`.record` - the ``fusion`` section of the annotation document and the package check
  (8.4.1.2, 8.4.1.6).

Importing this package is light: SimpleITK and scipy are imported where they are used.
"""

from __future__ import annotations
