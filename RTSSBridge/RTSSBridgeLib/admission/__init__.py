"""Admission of received data before annotation (R-6.3, R-7.2, seed 001 / R-001).

Screening of every received file (polyglots, executables, archives, non-DICOM files named like
DICOM, truncated and oversized files are quarantined and never loaded), then profile-driven
checks of each case and of the batch: modalities, series completeness, explicit geometry, pixel
value validity, image size, slice thickness and count, transfer syntax, pairing with text and
structured records, case counts. Every finding has a code, a severity, the case, the series, the
files and the rule it breaks.
"""

from __future__ import annotations
