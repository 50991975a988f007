"""Deterministic, realistic sample cases written as real DICOM (ARCHITECTURE "Testing").

Five kinds (:data:`KINDS`), each a complete case with fake identifying values for
de-identification, analytic phantoms sampled through :class:`~RTSSBridgeLib.geometry.ImageGeometry`
and exact ground truth:

``ct-chest``
    thin-slice chest CT with lung nodules (seed 001);
``mr-brain-mets``
    T1W, T2W (moved head, known rigid offset) and T1W+C brain MR with metastases (seed 002);
``pet-ct``
    FDG PET and CT of one study on different grids, with hot lesions and SUV parameters;
``us-thyroid``
    one thyroid ultrasound image with a TI-RADS-scored nodule (Appendix A);
``xray-ra``
    CR hand and foot exams with Sharp/van der Heijde erosion and JSN scores (seed 004).

:func:`write_sample` is what ``mmanno sample`` calls; :func:`write_volume_series` and
:func:`write_enhanced_multiframe` write arbitrary test series (feet-first, oblique,
anisotropic, multi-frame) for loader and geometry tests.
"""

from __future__ import annotations

from .case import (
    DEFAULT_PRIMARY_SLICES,
    GENERATOR_VERSION,
    KINDS,
    KINDS_2D,
    MAX_SLICES,
    MIN_SLICES,
    PRIMARY_SERIES,
    SCHEMA_ID,
    KindPlan,
    SampleCase,
    SampleOptions,
    SeriesRecord,
    VolumePlan,
    load_schema,
    plan_sample,
    schema_path,
    validate_manifest,
    validate_options,
    write_sample,
)
from .dicom_writer import (
    ENHANCED_SOP_CLASS_UIDS,
    SOP_CLASS_UIDS,
    PixelEncoding,
    SeriesInfo,
    StudyInfo,
    default_encoding,
    file_name_for,
    head_to_feet_instance_numbers,
    save_dataset,
    write_enhanced_multiframe,
    write_single_image,
    write_volume_series,
)
from .identity import PRIVATE_CREATOR, Identity, make_identity

__all__ = [
    "DEFAULT_PRIMARY_SLICES",
    "ENHANCED_SOP_CLASS_UIDS",
    "GENERATOR_VERSION",
    "KINDS",
    "KINDS_2D",
    "MAX_SLICES",
    "MIN_SLICES",
    "PRIMARY_SERIES",
    "PRIVATE_CREATOR",
    "SCHEMA_ID",
    "SOP_CLASS_UIDS",
    "Identity",
    "KindPlan",
    "PixelEncoding",
    "SampleCase",
    "SampleOptions",
    "SeriesInfo",
    "SeriesRecord",
    "StudyInfo",
    "VolumePlan",
    "default_encoding",
    "file_name_for",
    "head_to_feet_instance_numbers",
    "load_schema",
    "make_identity",
    "plan_sample",
    "save_dataset",
    "schema_path",
    "validate_manifest",
    "validate_options",
    "write_enhanced_multiframe",
    "write_sample",
    "write_single_image",
    "write_volume_series",
]
