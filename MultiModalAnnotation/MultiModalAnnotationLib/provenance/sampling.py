"""Sampling QC of a batch of cases (R-6.9): a seeded, reproducible sample at the task's ratio,
and what a systematic failure rate does (widen the sample, or halt delivery).

* :func:`rank_cases` orders the cases by SHA-256 of ``"<seed>:<case id>"`` - the order depends on
  the seed and the ids only (not on folder listing order or platform), and a wider sample is
  always a superset of a narrower one with the same seed (the first *k* of the same ranking);
* :func:`select_sample` takes ``ceil(ratio * n)`` of them (at least one);
* :func:`sampling_decision`: the failure rate of the sampled cases' QC results; above the task's
  ``qc.max_failure_rate`` (default :data:`DEFAULT_MAX_FAILURE_RATE`) the sample is widened
  (ratio doubled, up to a full check); when the full batch was checked and still fails, delivery
  is halted.

The batch's decisions are recorded in its own hash-chained trail ``sampling.jsonl`` (same format
as a case's ``audit.jsonl``); every case drawn also gets a ``sampled`` event in its own trail.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any, Dict, List, Mapping, Optional, Sequence

from RTSSBridgeLib.errors import InputError

#: Largest share of failed QC checks before the sample widens or delivery halts (when the task
#: gives no ``qc.max_failure_rate``): 10 %, a common acceptance-sampling limit for annotation.
DEFAULT_MAX_FAILURE_RATE = 0.10
SAMPLING_TRAIL = "sampling.jsonl"


def rank_cases(case_ids: Sequence[str], seed: int) -> List[str]:
    """The cases in their seeded order (see the module docstring)."""
    if len(set(case_ids)) != len(case_ids):
        raise InputError("a case id appears twice in the batch", field="cases")
    return sorted(case_ids, key=lambda c: (hashlib.sha256(f"{seed}:{c}".encode()).hexdigest(), c))


def sample_size(n: int, ratio: float) -> int:
    if not 0 < ratio <= 1:
        raise InputError(f"sampling ratio {ratio} is not in (0, 1]", field="ratio")
    return 0 if n == 0 else min(n, max(1, math.ceil(ratio * n - 1e-9)))


def select_sample(case_ids: Sequence[str], ratio: float, seed: int) -> List[str]:
    """The cases drawn for QC (in their seeded order)."""
    return rank_cases(case_ids, seed)[:sample_size(len(case_ids), ratio)]


def sampling_decision(results: Mapping[str, Optional[bool]], ratio: float, max_failure_rate: float
                      ) -> Dict[str, Any]:
    """What the QC results of the sampled cases (``case -> passed``, None = not checked yet) mean."""
    checked = {c: p for c, p in results.items() if p is not None}
    pending = sorted(c for c, p in results.items() if p is None)
    failed = sorted(c for c, p in checked.items() if not p)
    rate = len(failed) / len(checked) if checked else None
    decision: Dict[str, Any] = {"checked": len(checked), "failed": failed, "pending": pending,
                                "failure_rate": rate, "max_failure_rate": max_failure_rate, "ratio": ratio}
    if pending:
        decision.update(decision="wait", next_ratio=ratio,
                        why=f"{len(pending)} sampled case(s) have no QC result yet")
    elif rate is not None and rate > max_failure_rate:
        if ratio < 1:
            decision.update(decision="widen", next_ratio=min(1.0, ratio * 2),
                            why=f"failure rate {rate:.1%} above {max_failure_rate:.1%}: systematic problem suspected, "
                                "the sample is widened")
        else:
            decision.update(decision="halt", next_ratio=1.0,
                            why=f"failure rate {rate:.1%} above {max_failure_rate:.1%} on a full check: delivery "
                                "halted until the batch is reworked")
    else:
        decision.update(decision="deliver", next_ratio=ratio,
                        why=f"failure rate {0.0 if rate is None else rate:.1%} within {max_failure_rate:.1%}")
    return decision


def max_failure_rate(task: Mapping[str, Any]) -> float:
    return float(task.get("qc", {}).get("max_failure_rate", DEFAULT_MAX_FAILURE_RATE))


# --------------------------------------------------------------------------- batches of case folders
def batch_cases(batch: Any) -> Dict[str, Any]:
    """``case id -> Case`` of every case folder directly below ``batch`` (one task for all)."""
    from pathlib import Path

    from .case import Case

    root = Path(batch)
    if not root.is_dir():
        raise InputError("no such batch folder", file=str(root))
    cases: Dict[str, Any] = {}
    tasks = set()
    for folder in sorted(p for p in root.iterdir() if (p / "audit.jsonl").is_file()):
        case = Case(folder)
        s = case.state()
        cases[s.case_id] = case
        tasks.add(s.task.get("task_id"))
    if not cases:
        raise InputError("no case folder (with audit.jsonl) below the batch", file=str(root))
    if len(tasks) > 1:
        raise InputError(f"the batch mixes tasks {sorted(map(str, tasks))}; sample one task at a time",
                         file=str(root))
    return cases


def _batch_trail(batch: Any) -> Any:
    from pathlib import Path

    from .audit import AuditTrail

    return AuditTrail(Path(batch) / SAMPLING_TRAIL)


def draw_sample(batch: Any, actor: str, seed: int, ratio: Optional[float] = None) -> Dict[str, Any]:
    """Draw the QC sample of a batch (the task's ratio, or the widened one of the last decision),
    record it in ``sampling.jsonl`` and in every drawn case's trail (R-6.9)."""
    cases = batch_cases(batch)
    task = next(iter(cases.values())).state().task
    trail = _batch_trail(batch)
    with trail.transaction() as tx:
        decisions = [e for e in tx.events if e["action"] == "qc_result"]
        if ratio is None:
            ratio = (decisions[-1]["details"]["next_ratio"] if decisions
                     else float(task.get("qc", {}).get("sampling_ratio", 1.0)))
        selected = select_sample(list(cases), ratio, seed)
        earlier = {c for e in tx.events if e["action"] == "sampled" for c in e["details"]["selected"]}
        event = tx.append(actor=actor, role="qc", action="sampled", objects=selected, details={
            "seed": seed, "ratio": ratio, "cases": len(cases), "selected": selected,
            "added": [c for c in selected if c not in earlier], "task": task.get("task_id")})
    for rank, case_id in enumerate(selected, 1):
        if case_id not in earlier:
            cases[case_id].record_sampled(actor, seed=seed, ratio=ratio, rank=rank, batch_event=event["seq"])
    return event


def check_sample(batch: Any, actor: str) -> Dict[str, Any]:
    """The sampled cases' latest QC results -> deliver, wait, widen or halt; recorded in
    ``sampling.jsonl`` (R-6.9)."""
    cases = batch_cases(batch)
    task = next(iter(cases.values())).state().task
    trail = _batch_trail(batch)
    with trail.transaction() as tx:
        draws = [e for e in tx.events if e["action"] == "sampled"]
        if not draws:
            raise InputError("no sample drawn yet (mmanno case sample)", file=str(trail.path))
        draw = draws[-1]["details"]
        results: Dict[str, Optional[bool]] = {}
        for case_id in draw["selected"]:
            qc = cases[case_id].state().qc_results if case_id in cases else []
            results[case_id] = qc[-1]["passed"] if qc else None
        decision = sampling_decision(results, float(draw["ratio"]), max_failure_rate(task))
        decision["seed"] = draw["seed"]
        return tx.append(actor=actor, role="qc", action="qc_result", objects=sorted(results), reason=decision["why"],
                         details=decision)
