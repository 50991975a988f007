"""A case folder under workflow control (R-5.6, R-6.7 - R-6.10, R-6.12): every operation is
checked by the workflow (:mod:`.workflow`) and recorded in the case's audit trail (:mod:`.audit`).

Layout of a case folder::

    audit.jsonl, audit.head.json   the trail (the only record of the case's state)
    objects/<sha256>               content-addressed store: task, template, version trees, files
    releases/<version>/            frozen releases: files read-only, release.json with checksums

Every operation runs inside one trail transaction (the trail's lock is held): the state is
replayed from the verified trail, the step is checked against it, and the events are appended -
so two people working on the same case at once cannot both move it from the same state.

A step that the workflow does not allow raises :class:`~.workflow.WorkflowError` naming the case's
state, the role and what is allowed; nothing is written then. Roles: the actor must hold the role
in the task (``roles[]``; when the role lists ``people``, the actor must be one of them).
Independence (R-6.8): a reviewer or arbiter may not review or arbitrate versions they drew.
"""

from __future__ import annotations

import datetime as _dt
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Sequence, Union

from RTSSBridgeLib.errors import InputError
from RTSSBridgeLib.fileio import atomic_directory, sha256_file, write_json_atomic

from ..schemas import schema_id, schema_problems
from .audit import TRAIL_NAME, AuditTrail, Transaction, head_path, verify_trail
from .canonical import content_hash
from .privacy import PrivacyGuard
from .workflow import (
    STAGES,
    CaseState,
    State,
    WorkflowError,
    illegal,
    replay,
    role_problem,
    transition,
)

if TYPE_CHECKING:  # heavy (numpy, nibabel) only where versions are read or written
    import numpy as np

    from ..documents import AnnotationDocument
    from ..tasks import TaskDefinition
    from ..templates import LabelTemplate
    from .versions import ObjectStore, VersionContent

PathLike = Union[str, "os.PathLike[str]"]
RELEASE_SCHEMA = "release"
RELEASE_FILE = "release.json"
OBJECTS = "objects"
RELEASES = "releases"
MODEL_ACTOR = "model"


def _store(folder: Path) -> ObjectStore:
    from .versions import ObjectStore

    return ObjectStore(folder / OBJECTS)


@dataclass(frozen=True)
class VerifyReport:
    """What :meth:`Case.verify` found: the trail, the store, and every release."""

    trail: Dict[str, Any]
    problems: List[str]
    releases: Dict[str, List[str]]

    @property
    def ok(self) -> bool:
        return not self.problems and not any(self.releases.values())

    def to_dict(self) -> Dict[str, Any]:
        return {"ok": self.ok, "trail": self.trail, "problems": self.problems, "releases": self.releases}


class Case:
    """A case folder (see the module docstring). Open an existing one with ``Case(folder)``, make
    a new one with :meth:`Case.create`."""

    def __init__(self, folder: PathLike, guard: Optional[PrivacyGuard] = None) -> None:
        self.folder = Path(folder)
        self.guard = guard or PrivacyGuard()
        self.trail = AuditTrail(self.folder / TRAIL_NAME, self.guard)
        if not self.trail.path.is_file():
            raise InputError(f"no case here (no {TRAIL_NAME}); create one with mmanno case create",
                             file=str(self.folder))
        self.store = _store(self.folder)
        self._version_cache: Dict[str, VersionContent] = {}

    # ------------------------------------------------------------------ creation and state
    @classmethod
    def create(cls, folder: PathLike, case_id: str, task: TaskDefinition, template: LabelTemplate, actor: str,
               role: str = "administrator", guard: Optional[PrivacyGuard] = None,
               reason: Optional[str] = None) -> Case:
        """A new case in state ``received``: the task and template are stored, the creation is the
        trail's first event. The folder must not hold a case yet."""
        root = Path(folder)
        guard = guard or PrivacyGuard()
        guard.check_actor(case_id, "case")
        if (root / TRAIL_NAME).exists():
            raise InputError("a case already exists here; cases are never re-created", file=str(root))
        problem = role_problem(task.data, actor, role)
        if problem:
            raise WorkflowError(f"illegal: a new case is created by an administrator of the task; {problem}",
                                field="role")
        if role != "administrator":
            raise WorkflowError(f"illegal: role '{role}' cannot create a case (allowed: administrator)", field="role")
        root.mkdir(parents=True, exist_ok=True)
        store = _store(root)
        task_object = store.put_json(task.to_dict())
        template_object = store.put_json(template.to_dict())
        trail = AuditTrail(root / TRAIL_NAME, guard, case=case_id)
        with trail.transaction() as tx:
            if tx.events:
                raise InputError("a case already exists here; cases are never re-created", file=str(root))
            tx.append(actor=actor, role=role, action="created", objects=[case_id, task.task_id], after=task_object,
                      reason=reason, details={
                          "case_id": case_id,
                          "task": {"id": task.task_id, "version": str(task.data.get("version", "")),
                                   "object": task_object},
                          "template": {"id": template.id, "version": template.version, "object": template_object}})
        return cls(root, guard)

    def state(self) -> CaseState:
        return self._replay(self.trail.events())

    def _replay(self, events: Sequence[Mapping[str, Any]]) -> CaseState:
        return replay(events, task_loader=self.store.get_json)

    def template(self) -> LabelTemplate:
        from ..templates import template_from_dict

        s = self.state()
        return template_from_dict(self.store.get_json(s.template_object))

    def _begin(self, tx: Transaction) -> CaseState:
        s = self._replay(tx.events)
        self.trail.case = s.case_id
        return s

    # ------------------------------------------------------------------ checks
    def _require(self, s: CaseState, state: State, actor: str, role: str, what: str, why: str = "") -> None:
        """The case must be in ``state`` (else ``illegal``, with ``why`` added) and ``actor`` may act
        as ``role`` for ``what``."""
        if s.state != state:
            raise illegal(s.case_id, s.state, role, what + why)
        self._authorise(s, actor, role, what)

    def _authorise(self, s: CaseState, actor: str, role: str, what: str) -> None:
        problem = role_problem(s.task, actor, role)
        if problem:
            raise WorkflowError(f"illegal: case {s.case_id} is in state '{s.state.value}'; role '{role}' cannot "
                                f"{what}: {problem}", field="role")

    @staticmethod
    def _reason(reason: Optional[str], what: str) -> str:
        if not reason or not reason.strip():
            raise WorkflowError(f"{what} needs a reason (it is recorded in the audit trail)", field="reason")
        return reason

    def _authors(self, s: CaseState, names: Sequence[str]) -> List[str]:
        return sorted({s.versions[n].actor for n in names if n in s.versions})

    # ------------------------------------------------------------------ transitions
    def advance(self, actor: str, role: str, target: str, reason: Optional[str] = None) -> Dict[str, Any]:
        """Move the case to ``target`` (a state name) - every guard of the workflow checked."""
        try:
            goal = State(target)
        except ValueError:
            raise InputError(f"{target!r} is not a state ({', '.join(s.value for s in State)})",
                             field="target") from None
        with self.trail.transaction() as tx:
            s = self._begin(tx)
            if goal == State.EXCEPTION:
                return self._raise_exception(tx, s, actor, role, reason)
            if s.state == State.EXCEPTION:
                return self._rollback(tx, s, actor, role, goal, reason)
            step = transition(s.state, goal)
            if step is None:
                raise illegal(s.case_id, s.state, role, f"move the case to '{goal.value}'")
            if step.role != role:
                raise illegal(s.case_id, s.state, role, f"move the case to '{goal.value}' (only {step.role} may)")
            if step.action == "arbitrated":
                raise WorkflowError(f"case {s.case_id}: leaving arbitration is the arbiter's decision; use "
                                    "mmanno case arbitrate", field="target")
            if step.action == "frozen":
                raise WorkflowError(f"case {s.case_id}: freezing stores a release; use mmanno case freeze",
                                    field="target")
            if step.action == "change_approved":
                raise WorkflowError(f"case {s.case_id} is frozen; a change goes through mmanno case change-request",
                                    field="target")
            self._authorise(s, actor, role, f"move the case to '{goal.value}'")
            if step.needs_reason:
                self._reason(reason, f"'{step.step}'")
            details: Dict[str, Any] = {"step": step.step}
            self._guard_transition(s, goal, role, details)
            return tx.append(actor=actor, role=role, action=step.action, objects=[s.case_id], reason=reason,
                             transition={"from": s.state.value, "to": goal.value}, details=details)

    def _guard_transition(self, s: CaseState, goal: State, role: str, details: Dict[str, Any]) -> None:
        policy = s.policy
        if s.state == State.ANNOTATING and goal == State.IN_REVIEW:
            latest: Dict[str, str] = {}
            for v in sorted(s.round_versions(), key=lambda v: v.number):
                latest[v.line] = v.name
            needed = policy.readers if s.annotation_round <= 1 else 1  # a rework round fixes one version
            if len(latest) < needed:
                raise WorkflowError(f"case {s.case_id} cannot go to review: {len(latest)} reader version(s) saved in "
                                    f"this round, the task asks for {needed} (readers: "
                                    f"{', '.join(sorted(latest)) or 'none'})", field="state")
            details["subjects"] = latest
            details["current"] = latest[sorted(latest)[0]]
        if s.state == State.IN_REVIEW and goal == State.QC:
            reviews = s.round_reviews()
            accepted = sorted({r["reviewer"] for r in reviews if r["overall"] == "accept"})
            objecting = sorted({r["reviewer"] for r in reviews if r["overall"] != "accept"})
            if objecting:
                raise WorkflowError(f"case {s.case_id} cannot pass review: {', '.join(objecting)} did not accept "
                                    "(request rework or escalate to arbitration)", field="state")
            if len(accepted) < policy.reviewers:
                high = " (high-risk task)" if policy.high_risk else ""
                raise WorkflowError(f"case {s.case_id} cannot pass review: {len(accepted)} of {policy.reviewers} "
                                    f"required reviewer(s){high} accepted", field="state")
            if s.flags:
                raise WorkflowError(f"case {s.case_id} cannot pass review: flagged uncertain and not reviewed: "
                                    f"{', '.join(sorted(s.flags))}", field="state")
            comparison = s.comparisons.get(s.review_round)
            if len(s.subjects) > 1:
                if comparison is None:
                    raise WorkflowError(f"case {s.case_id} has {len(s.subjects)} readers: compare them first "
                                        "(mmanno case compare)", field="state")
                if comparison["disagreement"]:
                    raise WorkflowError(f"case {s.case_id}: the readers disagree ({comparison['reasons'][0]}); "
                                        "escalate to arbitration", field="state")
        if s.state == State.IN_REVIEW and goal == State.ARBITRATION:
            comparison = s.comparisons.get(s.review_round)
            opinions = {r["overall"] for r in s.round_reviews()}
            if not (comparison and comparison["disagreement"]) and len(opinions) < 2:
                raise WorkflowError(f"case {s.case_id} has no disagreement to arbitrate (no reader comparison above "
                                    "the task's thresholds, no differing reviews)", field="state")
            details["disagreement"] = (comparison or {}).get("reasons", []) or ["reviewers differ: "
                                                                                + ", ".join(sorted(opinions))]
        if goal == State.ANNOTATING:
            details["base"] = s.current

    def _raise_exception(self, tx: Transaction, s: CaseState, actor: str, role: str,
                         reason: Optional[str]) -> Dict[str, Any]:
        if s.state in (State.FROZEN, State.EXCEPTION):
            raise illegal(s.case_id, s.state, role, "raise an exception")
        self._authorise(s, actor, role, "raise an exception")
        self._reason(reason, "an exception")
        return tx.append(actor=actor, role=role, action="exception", objects=[s.case_id], reason=reason,
                         transition={"from": s.state.value, "to": State.EXCEPTION.value},
                         details={"halted_in": s.state.value})

    def _rollback(self, tx: Transaction, s: CaseState, actor: str, role: str, goal: State,
                  reason: Optional[str]) -> Dict[str, Any]:
        origin = s.exception_from or State.RECEIVED
        if role != "administrator":
            raise illegal(s.case_id, s.state, role, f"roll the case back to '{goal.value}' (only administrator may)")
        if goal not in STAGES or goal == State.FROZEN or STAGES.index(goal) > STAGES.index(origin):
            raise illegal(s.case_id, s.state, role, f"roll back to '{goal.value}': the case was halted in "
                          f"'{origin.value}', it can return to that stage or an earlier one")
        self._authorise(s, actor, role, "roll the case back")
        self._reason(reason, "a rollback")
        details: Dict[str, Any] = {"halted_in": origin.value, "base": s.current}
        return tx.append(actor=actor, role=role, action="rollback", objects=[s.case_id], reason=reason,
                         transition={"from": State.EXCEPTION.value, "to": goal.value}, details=details)

    # ------------------------------------------------------------------ versions
    def save_version(self, actor: str, role: str, document: AnnotationDocument, masks: Mapping[str, np.ndarray], *,
                     line: Optional[str] = None, model: Optional[Mapping[str, Any]] = None,
                     proposal: Optional[str] = None, reason: Optional[str] = None) -> Dict[str, Any]:
        """Store a new version (never overwriting one) and record it.

        * an annotator saves in ``annotating`` (``line`` = the reader, default the actor);
        * ``model`` {name, version, parameters} records an AI proposal (R-6.6.3), saved by an
          annotator in ``annotating``; a human version naming ``proposal`` is its confirmation, and
          QCMetrics' AI-vs-human deviation is computed and recorded with it (R-6.7.2);
        * an arbiter saves in ``arbitration`` (line ``arbiter``).
        A frozen case is never modified: a change request comes first.
        """
        from .versions import store_version

        with self.trail.transaction() as tx:
            s = self._begin(tx)
            allowed = {State.ANNOTATING: "annotator", State.ARBITRATION: "arbiter"}
            if s.state not in allowed or allowed[s.state] != role:
                hint = " (submit a change request first)" if s.state == State.FROZEN else ""
                raise illegal(s.case_id, s.state, role, "save a version" + hint)
            self._authorise(s, actor, role, "save a version")
            if document.task_id != s.task.get("task_id"):
                raise InputError(f"the document belongs to task {document.task_id}, the case to "
                                 f"{s.task.get('task_id')}", field="task_id")
            tree = store_version(self.store, document, masks)
            number = len(s.versions) + 1
            if model is not None:
                origin, action, line = "model", "model_proposal", "ai-proposal"
                for key in ("name", "version"):
                    if not str(model.get(key, "")).strip():
                        raise InputError(f"an AI proposal records the model's {key}", field=f"model.{key}")
            elif role == "arbiter":
                origin, action, line = "arbiter", "edited", "arbiter"
            else:
                origin, action, line = "annotator", "confirmed" if proposal else "edited", line or actor
            same_line = [v for v in s.versions.values() if v.line == line]
            parent = max(same_line, key=lambda v: v.number).name if same_line else None
            version: Dict[str, Any] = {"name": f"v{number}", "number": number, "tree": tree, "line": line,
                                       "origin": origin, "parent": parent}
            details: Dict[str, Any] = {"version": version}
            if model is not None:
                details["model"] = {"name": str(model["name"]), "version": str(model["version"]),
                                    "parameters": dict(model.get("parameters", {}))}
            if proposal is not None:
                record = s.version(proposal)
                if record.origin != "model":
                    raise InputError(f"{proposal} is not an AI proposal (it is {record.origin}'s)", field="proposal")
                from .review import ai_deviation

                version["proposal"] = proposal
                details["ai_deviation"] = _clean(ai_deviation(self.load(record.tree), self.load(tree)))
            open_reworks = [r for r in s.open_reworks() if r["change"] is None and r.get("base")]
            if open_reworks and origin != "model":
                from .versions import diff_versions

                base = s.version(open_reworks[0]["base"])
                diff = diff_versions(self.store, base.tree, tree)
                details["diff_from_base"] = _diff_summary(base.name, diff)
            uncertain = [a.id for a in document.annotations if a.uncertain]
            if uncertain:
                details["uncertain"] = uncertain
            before = s.versions[parent].tree if parent else None
            return tx.append(actor=actor, role=role, action=action, objects=[s.case_id, version["name"]],
                             before=before, after=tree, reason=reason, details=details)

    def load(self, tree_or_name: str) -> VersionContent:
        """A version's content by tree digest or by name (``v3``)."""
        from .versions import load_version

        tree = tree_or_name
        if len(tree_or_name) != 64:
            tree = self.state().version(tree_or_name).tree
        if tree not in self._version_cache:
            self._version_cache[tree] = load_version(self.store, tree)
        return self._version_cache[tree]

    def diff(self, a: str, b: str) -> Dict[str, Any]:
        from .versions import diff_versions

        s = self.state()
        return diff_versions(self.store, s.version(a).tree, s.version(b).tree)

    # ------------------------------------------------------------------ review
    def compare(self, actor: str, role: str = "reviewer", consensus: Sequence[str] = ("majority", "staple")
                ) -> Dict[str, Any]:
        """Compare the readers under review (QCMetrics: Dice per label, score differences, kappa),
        record it, and store consensus proposals (majority vote, STAPLE) for the arbiter (R-6.8)."""
        from .review import compare_readers
        from .review import consensus as fuse
        from .versions import store_version

        with self.trail.transaction() as tx:
            s = self._begin(tx)
            if s.state != State.IN_REVIEW or role not in ("reviewer", "arbiter"):
                raise illegal(s.case_id, s.state, role, "compare readers")
            self._authorise(s, actor, role, "compare readers")
            if len(s.subjects) < 2:
                raise WorkflowError(f"case {s.case_id} has {len(s.subjects)} reader(s) under review; a comparison "
                                    "needs two or more", field="readers")
            contents = {reader: self.load(s.version(name).tree) for reader, name in s.subjects.items()}
            result = _clean(compare_readers(contents, s.policy, self._template_of(s)))
            result["subjects"] = dict(s.subjects)
            event = tx.append(actor=actor, role=role, action="compared",
                              objects=[s.case_id, *sorted(s.subjects.values())], details=result)
            number = len(s.versions)
            for method in consensus:
                document, masks, notes = fuse(contents, method)
                tree = store_version(self.store, document, masks)
                number += 1
                tx.append(actor=actor, role=role, action="consensus", objects=[s.case_id, f"v{number}"], after=tree,
                          details={"method": method, "notes": _clean(notes),
                                   "version": {"name": f"v{number}", "number": number, "tree": tree,
                                               "line": f"consensus-{method}", "origin": "consensus",
                                               "parent": None}})
            return event

    def _template_of(self, s: CaseState) -> Optional[LabelTemplate]:
        from ..templates import template_from_dict

        return template_from_dict(self.store.get_json(s.template_object)) if s.template_object else None

    def review(self, actor: str, opinions: Mapping[str, str], comment: Optional[str] = None) -> Dict[str, Any]:
        """A reviewer's opinions per annotation id (or ``case``): accept, request_change, reject.
        Every target flagged uncertain must get an opinion (that is its review, R-6.7.3)."""
        from .review import CASE_TARGET, check_opinion, overall_opinion

        with self.trail.transaction() as tx:
            s = self._begin(tx)
            role = "reviewer"
            self._require(s, State.IN_REVIEW, actor, role, "record a review opinion")
            if not opinions:
                raise InputError("a review gives at least one opinion (target=opinion)", field="opinions")
            clean = {str(k): check_opinion(v, f"opinions.{k}") for k, v in opinions.items()}
            known = {a.id for name in s.subjects.values() for a in self.load(s.version(name).tree).document.annotations}
            for target in clean:
                if target != CASE_TARGET and target not in known:
                    raise InputError(f"{target!r} is not an annotation of the versions under review "
                                     f"(or '{CASE_TARGET}')", field="opinions")
            missing = sorted(set(s.flags) - set(clean))
            if missing:
                raise WorkflowError(f"case {s.case_id}: flagged uncertain, a review must give an opinion on "
                                    f"{', '.join(missing)}", field="opinions")
            authors = self._authors(s, list(s.subjects.values()))
            if actor in authors:
                raise WorkflowError(f"illegal: {actor} drew a version under review and cannot review it (R-6.8 "
                                    "independent review)", field="actor")
            if any(r["reviewer"] == actor for r in s.round_reviews()):
                raise WorkflowError(f"{actor} already reviewed case {s.case_id} in this round", field="actor")
            overall = overall_opinion(list(clean.values()))
            if overall != "accept" and not (comment and comment.strip()):
                raise WorkflowError(f"a '{overall}' opinion needs a comment saying why", field="comment")
            details: Dict[str, Any] = {"opinions": clean, "overall": overall, "subjects": dict(s.subjects),
                                       "resolves_flags": sorted(set(s.flags) & set(clean))}
            if any(r["change"] is not None for r in s.open_reworks()):
                details["recheck"] = True
            return tx.append(actor=actor, role=role, action="reviewed",
                             objects=[s.case_id, *sorted(s.subjects.values())], reason=comment, details=details)

    def arbitrate(self, actor: str, decision: str, reasons: str, version: Optional[str] = None) -> Dict[str, Any]:
        """The arbiter's final decision (R-6.8): ``adopt`` a version (a reader's, a consensus
        proposal, or the arbiter's own) -> QC, or ``rework`` -> annotating. Reasons required."""
        with self.trail.transaction() as tx:
            s = self._begin(tx)
            role = "arbiter"
            self._require(s, State.ARBITRATION, actor, role, "arbitrate")
            self._reason(reasons, "an arbitration decision")
            if actor in self._authors(s, [v.name for v in s.versions.values() if v.origin == "annotator"
                                          and v.round == s.annotation_round]):
                raise WorkflowError(f"illegal: {actor} drew a version of this round and cannot arbitrate it",
                                    field="actor")
            details: Dict[str, Any] = {"decision": decision, "subjects": dict(s.subjects)}
            if decision == "adopt":
                if version is None:
                    raise InputError("an adopt decision names the version adopted", field="version")
                record = s.version(version)
                details.update(version=record.name, current=record.name, tree=record.tree)
                target = State.QC
            elif decision == "rework":
                details["base"] = s.current
                target = State.ANNOTATING
            else:
                raise InputError(f"{decision!r} is not one of adopt, rework", field="decision")
            return tx.append(actor=actor, role=role, action="arbitrated", objects=[s.case_id, *([version] if version
                                                                                              else [])],
                             reason=reasons, transition={"from": s.state.value, "to": target.value}, details=details)

    def flag(self, actor: str, role: str, target: str, category: str, comment: Optional[str] = None
             ) -> Dict[str, Any]:
        """Flag an annotation (id) or the ``case`` uncertain (R-6.7.3); it then needs a review."""
        from .review import UNCERTAINTY_CATEGORIES

        if category not in UNCERTAINTY_CATEGORIES:
            raise InputError(f"{category!r} is not one of {', '.join(UNCERTAINTY_CATEGORIES)}", field="category")
        with self.trail.transaction() as tx:
            s = self._begin(tx)
            if s.state in (State.FROZEN, State.EXCEPTION):
                raise illegal(s.case_id, s.state, role, "flag uncertainty")
            self._authorise(s, actor, role, "flag uncertainty")
            return tx.append(actor=actor, role=role, action="flagged", objects=[s.case_id, target], reason=comment,
                             details={"target": target, "category": category})

    def record_sampled(self, actor: str, *, seed: int, ratio: float, rank: int, batch_event: int
                       ) -> Dict[str, Any]:
        """Record that the case was drawn for sampling QC (R-6.9; see :mod:`.sampling`)."""
        with self.trail.transaction() as tx:
            s = self._begin(tx)
            self._authorise(s, actor, "qc", "record a QC sample")
            return tx.append(actor=actor, role="qc", action="sampled", objects=[s.case_id],
                             details={"seed": seed, "ratio": ratio, "rank": rank, "batch_event": batch_event})

    # ------------------------------------------------------------------ QC and freeze
    def qc_result(self, actor: str, passed: bool, metrics: Optional[Mapping[str, Any]] = None,
                  reason: Optional[str] = None) -> Dict[str, Any]:
        """Record the QC check of the current version (R-6.9)."""
        with self.trail.transaction() as tx:
            s = self._begin(tx)
            role = "qc"
            self._require(s, State.QC, actor, role, "record a QC result")
            if not passed:
                self._reason(reason, "a failed QC result")
            details = {"passed": bool(passed), "version": s.current, "metrics": _clean(dict(metrics or {}))}
            if any(r["change"] is not None for r in s.open_reworks()):
                details["recheck"] = True
            return tx.append(actor=actor, role=role, action="qc_result", objects=[s.case_id, s.current or ""],
                             reason=reason, details=details)

    def freeze(self, actor: str, version: str, scope: str, notes: str = "", date: Optional[str] = None
               ) -> Dict[str, Any]:
        """Freeze the QC-passed current version as release ``version`` (R-6.10): its files are
        written to ``releases/<version>/`` with ``release.json`` (checksums, number, date, scope,
        notes, trail anchor) and made read-only; the case goes to ``frozen``."""
        from .versions import checkout, make_read_only

        with self.trail.transaction() as tx:
            s = self._begin(tx)
            role = "administrator"
            self._require(s, State.QC, actor, role, "freeze")
            passed = [q for q in s.qc_results if q["event"] > s.entered_state_seq]
            if not passed or not passed[-1]["passed"] or passed[-1]["version"] != s.current:
                raise WorkflowError(f"case {s.case_id}: the current version {s.current} has no passing QC result; "
                                    "only a QC-passed version is frozen (R-6.10)", field="state")
            self.guard.check_actor(version, "version")
            self.guard.check_text(scope, "scope")
            self.guard.check_text(notes, "notes")
            if not scope.strip():
                raise InputError("a release states its scope (training, validation, release...)", field="scope")
            if any(r["release"] == version for r in s.releases):
                raise InputError(f"release {version} exists; releases are never overwritten", field="version")
            day = date or _dt.datetime.now(_dt.timezone.utc).date().isoformat()
            record = s.version(s.current or "")
            folder = self.folder / RELEASES / version
            with atomic_directory(folder) as tmp:
                checkout(self.store, record.tree, tmp)
                files = [{"path": p.relative_to(tmp).as_posix(), "sha256": sha256_file(p), "bytes": p.stat().st_size}
                         for p in sorted(tmp.rglob("*")) if p.is_file()]
                manifest = {"schema": schema_id(RELEASE_SCHEMA), "case": s.case_id, "release": version, "date": day,
                            "scope": scope, "notes": notes, "version": record.name, "tree": record.tree,
                            "task": {"id": s.task.get("task_id"), "object": s.task_object},
                            "trail": {"events": s.n_events, "last_hash": s.last_hash}, "files": files}
                write_json_atomic(tmp / RELEASE_FILE, manifest)
                for p in tmp.rglob("*"):
                    if p.is_file():
                        make_read_only(p)
            make_read_only_dir(folder)
            return tx.append(actor=actor, role=role, action="frozen", objects=[s.case_id, version, record.name],
                             before=record.tree, after=content_hash(manifest), reason=notes or None,
                             transition={"from": s.state.value, "to": State.FROZEN.value},
                             details={"release": version, "date": day, "scope": scope, "version": record.name,
                                      "tree": record.tree, "manifest": content_hash(manifest), "current": record.name})

    def change_request(self, actor: str, release: str, reason: str) -> Dict[str, Any]:
        """A recorded change request on a frozen case (R-6.10): the case goes back to annotating
        from the frozen version; the release itself stays as it is and still verifies."""
        with self.trail.transaction() as tx:
            s = self._begin(tx)
            role = "administrator"
            self._require(s, State.FROZEN, actor, role, "file a change request", " (only a frozen case takes one)")
            self._reason(reason, "a change request")
            if not any(r["release"] == release for r in s.releases):
                raise InputError(f"case {s.case_id} has no release {release!r}", field="release")
            ident = f"CR-{len(s.change_requests) + 1}"
            tx.append(actor=actor, role=role, action="change_request", objects=[s.case_id, release, ident],
                      reason=reason, details={"id": ident, "release": release})
            return tx.append(actor=actor, role=role, action="change_approved", objects=[s.case_id, ident],
                             reason=reason, transition={"from": State.FROZEN.value, "to": State.ANNOTATING.value},
                             details={"id": ident, "base": s.current})

    def modify_release(self, release: str) -> None:
        """Always refused: a frozen release is never modified in place (R-6.10)."""
        raise WorkflowError(f"release {release} of case {self.state().case_id} is frozen: it is never modified; "
                            "file a change request (mmanno case change-request) to make a new version",
                            field="release")

    # ------------------------------------------------------------------ verification and history
    def verify_release(self, release: str) -> List[str]:
        """Problems of one release: changed, missing, extra or writable files, a manifest that
        breaks its schema or no longer matches the trail's freeze event."""
        folder = self.folder / RELEASES / release
        manifest_path = folder / RELEASE_FILE
        if not manifest_path.is_file():
            return [f"{release}: no {RELEASE_FILE}"]
        from ..schemas import read_json

        manifest = read_json(str(manifest_path))
        problems = [f"{release}/{RELEASE_FILE}: {p}" for p in schema_problems(RELEASE_SCHEMA, manifest)]
        if problems:
            return problems
        listed = {f["path"]: f["sha256"] for f in manifest["files"]}
        present = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()} - {RELEASE_FILE}
        for path in sorted(set(listed) - present):
            problems.append(f"{release}/{path}: missing")
        for path in sorted(present - set(listed)):
            problems.append(f"{release}/{path}: extra file")
        for path in sorted(set(listed) & present):
            if sha256_file(folder / path) != listed[path]:
                problems.append(f"{release}/{path}: changed (checksum differs)")
        from .versions import read_only_problems

        problems += [f"{release}/{p}" for p in read_only_problems(folder)]
        events = [e for e in self.trail.events() if e["action"] == "frozen" and e["details"]["release"] == release]
        if not events:
            problems.append(f"{release}: no freeze event in the trail")
        elif events[-1]["details"]["manifest"] != content_hash(manifest):
            problems.append(f"{release}/{RELEASE_FILE}: does not match the freeze event {events[-1]['seq']}")
        return problems

    def verify(self) -> VerifyReport:
        """The trail, the version store (every version's objects) and every release."""
        from .versions import tree_problems

        trail = verify_trail(self.trail.path)
        problems: List[str] = [] if trail.ok else [trail.line()]
        releases: Dict[str, List[str]] = {}
        if trail.ok:
            from .versions import StoreError

            try:
                s = self._replay(trail.events)
            except StoreError as exc:  # the task or template object changed
                return VerifyReport(trail.to_dict(), [str(exc)], releases)
            for record in s.versions.values():
                problems += [f"{record.name}: {p}" for p in tree_problems(self.store, record.tree)]
            for release in s.releases:
                releases[release["release"]] = self.verify_release(release["release"])
        return VerifyReport(trail.to_dict(), problems, releases)

    def history(self) -> List[Dict[str, Any]]:
        """One row per event: seq, time, actor, role, action, transition, reason, objects."""
        rows = []
        for e in self.trail.events():
            t = e.get("transition")
            rows.append({"seq": e["seq"], "time": e["time"], "actor": e["actor"], "role": e["role"],
                         "action": e["action"], "transition": f"{t['from']} -> {t['to']}" if t else None,
                         "objects": e["objects"], "reason": e["reason"]})
        return rows


def make_read_only_dir(folder: Path) -> None:
    """Read-only release folders too (no file can be added or removed by a normal user)."""
    import stat

    for d in sorted([folder, *[p for p in folder.rglob("*") if p.is_dir()]], key=lambda p: -len(p.parts)):
        d.chmod(d.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def _clean(value: Any) -> Any:
    """Plain JSON (NaN and infinities as null) for event details."""
    import math

    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return _clean(value.item())
    return value


def _diff_summary(base: str, diff: Mapping[str, Any]) -> Dict[str, Any]:
    from .versions import diff_lines

    return {"base": base, "lines": diff_lines(diff)[:50],
            "masks": [{k: m[k] for k in ("id", "dice", "volume_change_ml")} for m in diff["masks"]]}


def case_folder_of(trail: PathLike) -> Path:
    return Path(trail).parent


__all__ = ["Case", "VerifyReport", "case_folder_of", "head_path"]
