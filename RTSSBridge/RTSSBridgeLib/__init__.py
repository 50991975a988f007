"""RTSSBridge core: the boundary between files and annotation data.

Image geometry (the one home of LPS/RAS and IJK<->mm conversion), DICOM series loading,
NIfTI I/O, sample cases, admission checks (:mod:`.admission`), de-identification
(:mod:`.deid`) and, in later issues, RT Structure Set / DICOM SEG conversion. Pure Python:
never imports slicer, qt, ctk or vtk; the scene adapters live in :mod:`RTSSBridgeLib.mrml`.
"""

from __future__ import annotations

__version__ = "0.1.0"
