"""The case workflow (R-6.8, R-6.9, R-6.10, R-6.12): states, who may move a case between them,
and the case's state replayed from its audit trail.

States, in order: ``received`` -> ``admitted`` -> ``deidentified`` -> ``preprocessed`` ->
``annotating`` -> ``in_review`` -> ``arbitration`` -> ``qc`` -> ``frozen``, plus ``exception``.

=================  =================  ==============  =====================================
from               to                 role            step
=================  =================  ==============  =====================================
received           admitted           administrator   admit (admission check passed)
admitted           deidentified       administrator   de-identify
deidentified       preprocessed       administrator   preprocess
preprocessed       annotating         administrator   assign to the readers
annotating         in_review          annotator       submit (every required reader saved)
in_review          qc                 reviewer        accept (required reviews, no disagreement)
in_review          arbitration        reviewer        escalate (a disagreement above threshold)
in_review          annotating         reviewer        request rework (reason)
arbitration        qc                 arbiter         decide: adopt a version (reasons)
arbitration        annotating         arbiter         decide: rework (reasons)
qc                 annotating         qc              rework (reason)
qc                 in_review          qc              back to review (reason)
qc                 frozen             administrator   freeze (QC passed)
frozen             annotating         administrator   apply an approved change request
any but frozen     exception          any task role   raise an exception (reason): halts
exception          an earlier stage   administrator   roll back (reason)
=================  =================  ==============  =====================================

The actor must hold the role in the task (``roles[].role``; when the role lists ``people``, the
actor must be one of them). A refused step names the case's state, the role and what is allowed.

Nothing about the state is stored apart from the trail: :class:`CaseState` is rebuilt by
replaying the (verified) events, so the state can never disagree with the record of how it
came about.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from RTSSBridgeLib.errors import InputError


class State(str, Enum):
    RECEIVED = "received"
    ADMITTED = "admitted"
    DEIDENTIFIED = "deidentified"
    PREPROCESSED = "preprocessed"
    ANNOTATING = "annotating"
    IN_REVIEW = "in_review"
    ARBITRATION = "arbitration"
    QC = "qc"
    FROZEN = "frozen"
    EXCEPTION = "exception"


#: The stages in order (a rollback goes back along it).
STAGES: Tuple[State, ...] = (State.RECEIVED, State.ADMITTED, State.DEIDENTIFIED, State.PREPROCESSED,
                             State.ANNOTATING, State.IN_REVIEW, State.ARBITRATION, State.QC, State.FROZEN)
ANY_ROLE = "any"


@dataclass(frozen=True)
class Transition:
    source: State
    target: State
    role: str
    step: str
    action: str = "transition"  # the audit action that makes it
    needs_reason: bool = False


TRANSITIONS: Tuple[Transition, ...] = (
    Transition(State.RECEIVED, State.ADMITTED, "administrator", "admit"),
    Transition(State.ADMITTED, State.DEIDENTIFIED, "administrator", "de-identify"),
    Transition(State.DEIDENTIFIED, State.PREPROCESSED, "administrator", "preprocess"),
    Transition(State.PREPROCESSED, State.ANNOTATING, "administrator", "assign"),
    Transition(State.ANNOTATING, State.IN_REVIEW, "annotator", "submit"),
    Transition(State.IN_REVIEW, State.QC, "reviewer", "accept"),
    Transition(State.IN_REVIEW, State.ARBITRATION, "reviewer", "escalate"),
    Transition(State.IN_REVIEW, State.ANNOTATING, "reviewer", "request rework", "rework_requested", True),
    Transition(State.ARBITRATION, State.QC, "arbiter", "decide: adopt", "arbitrated", True),
    Transition(State.ARBITRATION, State.ANNOTATING, "arbiter", "decide: rework", "arbitrated", True),
    Transition(State.QC, State.ANNOTATING, "qc", "rework", "rework_requested", True),
    Transition(State.QC, State.IN_REVIEW, "qc", "back to review", "rework_requested", True),
    Transition(State.QC, State.FROZEN, "administrator", "freeze", "frozen"),
    Transition(State.FROZEN, State.ANNOTATING, "administrator", "apply change request", "change_approved", True),
)


class WorkflowError(InputError):
    """A step the workflow does not allow now (wrong state, wrong role, a guard not met).
    Remedy: the message says what is allowed from the case's state and by which role."""


def transition(source: State, target: State) -> Optional[Transition]:
    for t in TRANSITIONS:
        if t.source == source and t.target == target:
            return t
    return None


def allowed_from(state: State) -> List[str]:
    """Human-readable list of the steps allowed from ``state`` (for refusals and ``case status``)."""
    steps = [f"{t.target.value} by {t.role} ({t.step})" for t in TRANSITIONS if t.source == state]
    if state not in (State.FROZEN, State.EXCEPTION):
        steps.append("exception by any task role")
    if state == State.EXCEPTION:
        steps.append("an earlier stage by administrator (roll back)")
    return steps


def illegal(case_id: str, state: State, role: str, what: str) -> WorkflowError:
    allowed = "; ".join(allowed_from(state)) or "nothing"
    return WorkflowError(f"illegal: case {case_id} is in state '{state.value}'; role '{role}' cannot {what} "
                         f"(allowed from '{state.value}': {allowed})", field="state")


# --------------------------------------------------------------------------- policy
@dataclass(frozen=True)
class ReviewPolicy:
    """How a task reviews (R-6.8): readers, reviewers, and what counts as a disagreement."""

    high_risk: bool = False
    readers: int = 1
    reviewers: int = 1
    dice_threshold: float = 0.75
    score_difference: float = 1.0
    kappa_threshold: Optional[float] = None
    independent: bool = True

    @classmethod
    def from_task(cls, task: Mapping[str, Any]) -> ReviewPolicy:
        review = dict(task.get("review", {}))
        qc = dict(task.get("qc", {}))

        def min_people(role: str) -> int:
            counts = [int(r.get("min_people", 1)) for r in task.get("roles", []) if r["role"] == role]
            return max(counts) if counts else 1

        high_risk = bool(review.get("high_risk", False))
        reviewers = int(review.get("reviewers", max(min_people("reviewer"), 2 if high_risk else 1)))
        if high_risk and reviewers < 2:
            raise InputError(f"review.reviewers: {reviewers} for a high-risk task; rule: high-risk cases are "
                             "reviewed by two or more (R-6.8)", field="review.reviewers")
        return cls(high_risk=high_risk, readers=int(review.get("readers", 1)), reviewers=reviewers,
                   dice_threshold=float(qc.get("dice_threshold", 0.75)),
                   score_difference=float(review.get("score_difference", 1.0)),
                   kappa_threshold=qc.get("kappa_threshold"), independent=bool(review.get("independent", True)))

    def to_dict(self) -> Dict[str, Any]:
        return {"high_risk": self.high_risk, "readers": self.readers, "reviewers": self.reviewers,
                "dice_threshold": self.dice_threshold, "score_difference": self.score_difference,
                "kappa_threshold": self.kappa_threshold, "independent": self.independent}


def role_problem(task: Mapping[str, Any], actor: str, role: str) -> Optional[str]:
    """Why ``actor`` may not act as ``role`` in ``task`` (None when it may)."""
    entries = [r for r in task.get("roles", []) if r["role"] == role]
    if not entries:
        named = sorted({r["role"] for r in task.get("roles", [])})
        return f"task {task.get('task_id')} names no {role} role (roles: {', '.join(named)})"
    people = [p for r in entries for p in r.get("people", [])]
    if people and actor not in people:
        return f"{actor} is not among the task's {role} people ({', '.join(people)})"
    return None


# --------------------------------------------------------------------------- replay
@dataclass
class VersionRecord:
    """One saved version (from its audit event)."""

    name: str  # v<number>
    number: int
    tree: str
    line: str  # reader id, "ai-proposal", "consensus-majority", "consensus-staple", "arbiter"
    origin: str  # annotator, model, consensus, arbiter
    actor: str
    seq: int
    round: int
    parent: Optional[str] = None
    proposal: Optional[str] = None

    def to_dict(self) -> Dict[str, Any]:
        return {"name": self.name, "number": self.number, "tree": self.tree, "line": self.line,
                "origin": self.origin, "actor": self.actor, "event": self.seq, "round": self.round,
                "parent": self.parent, "proposal": self.proposal}


@dataclass
class CaseState:
    """Everything known about a case, rebuilt from its events (see the module docstring)."""

    case_id: str = ""
    task: Dict[str, Any] = field(default_factory=dict)
    task_object: str = ""
    template_object: str = ""
    template_ref: Dict[str, str] = field(default_factory=dict)
    state: State = State.RECEIVED
    exception_from: Optional[State] = None
    annotation_round: int = 0
    review_round: int = 0
    versions: Dict[str, VersionRecord] = field(default_factory=dict)
    subjects: Dict[str, str] = field(default_factory=dict)  # reader -> version under review
    current: Optional[str] = None
    reviews: List[Dict[str, Any]] = field(default_factory=list)
    comparisons: Dict[int, Dict[str, Any]] = field(default_factory=dict)  # review round -> comparison
    consensus: Dict[int, Dict[str, str]] = field(default_factory=dict)  # review round -> {method: version}
    decisions: List[Dict[str, Any]] = field(default_factory=list)
    flags: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    flag_history: List[Dict[str, Any]] = field(default_factory=list)
    qc_results: List[Dict[str, Any]] = field(default_factory=list)
    reworks: List[Dict[str, Any]] = field(default_factory=list)
    releases: List[Dict[str, Any]] = field(default_factory=list)
    change_requests: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    sampling: List[Dict[str, Any]] = field(default_factory=list)
    entered_state_seq: int = 0
    n_events: int = 0
    last_hash: Optional[str] = None

    @property
    def policy(self) -> ReviewPolicy:
        return ReviewPolicy.from_task(self.task)

    def version(self, name: str) -> VersionRecord:
        if name not in self.versions:
            known = ", ".join(self.versions) or "none"
            raise InputError(f"case {self.case_id} has no version {name!r} (versions: {known})", field="version")
        return self.versions[name]

    def round_versions(self) -> List[VersionRecord]:
        """Versions saved by people (annotators, arbiter) in the current annotation round."""
        return [v for v in self.versions.values() if v.round == self.annotation_round
                and v.origin in ("annotator",)]

    def round_reviews(self) -> List[Dict[str, Any]]:
        return [r for r in self.reviews if r["round"] == self.review_round]

    def open_reworks(self) -> List[Dict[str, Any]]:
        return [r for r in self.reworks if r.get("recheck") is None]

    def to_dict(self) -> Dict[str, Any]:
        return {"case": self.case_id, "state": self.state.value,
                "exception_from": self.exception_from.value if self.exception_from else None,
                "task": self.task.get("task_id"), "template": dict(self.template_ref),
                "annotation_round": self.annotation_round, "review_round": self.review_round,
                "current": self.current, "subjects": dict(self.subjects),
                "versions": [v.to_dict() for v in self.versions.values()],
                "reviews": copy.deepcopy(self.reviews), "comparison": self.comparisons.get(self.review_round),
                "consensus": self.consensus.get(self.review_round), "decisions": copy.deepcopy(self.decisions),
                "flags": copy.deepcopy(self.flags), "qc_results": copy.deepcopy(self.qc_results),
                "reworks": copy.deepcopy(self.reworks), "releases": copy.deepcopy(self.releases),
                "change_requests": copy.deepcopy(self.change_requests), "sampling": copy.deepcopy(self.sampling),
                "allowed": allowed_from(self.state), "events": self.n_events, "last_hash": self.last_hash}


_VERSION_ACTIONS = ("model_proposal", "edited", "confirmed", "consensus")


def replay(events: Sequence[Mapping[str, Any]], task_loader: Any = None) -> CaseState:
    """The state of a case after ``events`` (verified, in order). ``task_loader(object)`` returns the
    task JSON stored under the digest named by the creation event."""
    s = CaseState()
    for event in events:
        action = event["action"]
        details = event.get("details", {}) or {}
        s.n_events = event["seq"]
        s.last_hash = event["hash"]
        if action == "created":
            s.case_id = details["case_id"]
            s.task_object = details["task"]["object"]
            s.template_object = details["template"]["object"]
            s.template_ref = {"id": details["template"]["id"], "version": details["template"]["version"]}
            s.task = task_loader(s.task_object) if task_loader else dict(details.get("task", {}))
        if action in _VERSION_ACTIONS and "version" in details:
            v = details["version"]
            record = VersionRecord(v["name"], v["number"], v["tree"], v["line"], v["origin"], event["actor"],
                                   event["seq"], s.annotation_round, v.get("parent"), v.get("proposal"))
            s.versions[record.name] = record
            if action == "consensus":
                s.consensus.setdefault(s.review_round, {})[details["method"]] = record.name
        if action == "compared":
            s.comparisons[s.review_round] = dict(details)
        if action == "reviewed":
            s.reviews.append({**details, "reviewer": event["actor"], "event": event["seq"], "round": s.review_round,
                              "comment": event.get("reason")})
        if action in _VERSION_ACTIONS and details.get("uncertain"):
            for target in details["uncertain"]:  # marked uncertain in the document itself
                s.flags[target] = {"category": "marked_in_document", "by": event["actor"], "event": event["seq"],
                                   "comment": None}
                s.flag_history.append({"event": event["seq"], "flagged": target, "category": "marked_in_document"})
        if action == "reviewed":
            for target in details.get("resolves_flags", []):
                if s.flags.pop(target, None) is not None:
                    s.flag_history.append({"event": event["seq"], "reviewed": target})
        if action == "flagged":
            s.flags[details["target"]] = {"category": details["category"], "by": event["actor"],
                                          "event": event["seq"], "comment": event.get("reason")}
            s.flag_history.append({"event": event["seq"], "flagged": details["target"], **details})
        if action == "unflagged":
            s.flags.pop(details["target"], None)
            s.flag_history.append({"event": event["seq"], "cleared": details["target"]})
        if action == "qc_result":
            s.qc_results.append({**details, "by": event["actor"], "event": event["seq"],
                                 "reason": event.get("reason")})
            for rework in s.open_reworks():
                if rework.get("change") is not None:
                    rework["recheck"] = {"event": event["seq"], "passed": details["passed"], "by": event["actor"]}
        if action == "sampled":
            s.sampling.append({**details, "event": event["seq"]})
        if action == "change_request":
            s.change_requests[details["id"]] = {"id": details["id"], "release": details["release"],
                                                "reason": event.get("reason"), "by": event["actor"],
                                                "event": event["seq"], "approved": None}
        transition_ = event.get("transition")
        if action == "arbitrated":
            s.decisions.append({**details, "by": event["actor"], "event": event["seq"], "reasons": event.get("reason")})
        if action == "rework_requested" or (action == "arbitrated" and details.get("decision") == "rework"):
            s.reworks.append({"id": f"RW-{len(s.reworks) + 1}", "event": event["seq"], "by": event["actor"],
                              "role": event["role"], "reason": event.get("reason"),
                              "from_state": transition_["from"] if transition_ else None,
                              "base": details.get("base") or s.current, "change": None, "recheck": None})
        if action in ("edited", "confirmed") and "version" in details:
            for rework in s.open_reworks():
                if rework["change"] is None or rework["change"].get("version") != details["version"]["name"]:
                    rework["change"] = {"version": details["version"]["name"], "event": event["seq"],
                                        "diff": details.get("diff_from_base")}
        if action == "frozen":
            s.releases.append({**details, "by": event["actor"], "event": event["seq"]})
        if action == "change_approved":
            request = s.change_requests.get(details["id"])
            if request is not None:
                request["approved"] = {"by": event["actor"], "event": event["seq"]}
        if transition_ is not None:
            target = State(transition_["to"])
            if target == State.EXCEPTION:
                s.exception_from = State(transition_["from"])
            if target == State.ANNOTATING:
                s.annotation_round += 1
                s.subjects = {}
            if target == State.IN_REVIEW:
                s.review_round += 1
                s.subjects = dict(details.get("subjects", s.subjects))
            if "current" in details:
                s.current = details["current"]
            s.state = target
            s.entered_state_seq = event["seq"]
        elif action in ("edited", "confirmed") and details.get("current"):
            s.current = details["version"]["name"]
        if action in ("reviewed",) and details.get("recheck"):
            for rework in s.open_reworks():
                if rework["change"] is not None:
                    rework["recheck"] = {"event": event["seq"], "passed": details["overall"] == "accept",
                                         "by": event["actor"]}
    return s
