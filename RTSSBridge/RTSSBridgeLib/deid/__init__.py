"""De-identification of DICOM data before annotation (R-5.1, R-5.5, R-6.4, R-7.3).

Profiles are data (``Resources/profiles/deid``): ``basic`` encodes DICOM PS3.15 Table E.1-1,
``brain-mets-mr`` and ``ra-xray`` reproduce the tables of seeds 002 and 004 on top of it. The
engine streams files element by element (pixel data copied, never decoded), pseudonymises with
a secret key (keyed HMAC: same key, same pseudonyms), keeps the real-to-pseudonym mapping in a
separate owner-only registry, and the leak check scans every output element for any identifying
value of the originals.
"""

from __future__ import annotations
