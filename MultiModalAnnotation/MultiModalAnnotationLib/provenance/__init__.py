"""Provenance and workflow of annotated cases (R-5.6, R-6.7 - R-6.10, R-6.12).

* :mod:`.audit` - the hash-chained, append-only audit trail (``audit.jsonl``) and its check;
* :mod:`.canonical` - RFC 8785 canonical JSON and content hashes;
* :mod:`.privacy` - no identifying patient value in a provenance record;
* :mod:`.workflow` - case states, roles, transitions, and the state replayed from the trail;
* :mod:`.versions` - content-addressed versions and their diffs (QCMetrics Dice and volume);
* :mod:`.review` - multi-reader comparison, consensus (majority, STAPLE), AI-vs-human deviation;
* :mod:`.case` - a case folder: every operation checked by the workflow and recorded in the trail;
* :mod:`.cli` - ``mmanno audit ...`` and ``mmanno case ...``.

Core code: no slicer, qt, ctk or vtk import (the scene side is in ``..mrml.workflow``).
"""
