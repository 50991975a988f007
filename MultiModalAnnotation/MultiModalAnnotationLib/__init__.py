"""MultiModalAnnotation core: templates, tasks, annotation documents, fusion, links, provenance
and the ``mmanno`` command line. Pure Python (no slicer, qt, ctk or vtk); scene adapters live
in :mod:`MultiModalAnnotationLib.mrml`.
"""

from __future__ import annotations

__version__ = "0.1.0"
