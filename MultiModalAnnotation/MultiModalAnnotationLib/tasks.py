"""Task definitions (R-6.2, R-6.6, Appendix A): what a project annotates, on which data, with
which template, how it is checked, who does it, and how a model assists.

The JSON form is the ``task`` schema v1 (``Resources/schemas/task.schema.json``);
:class:`TaskDefinition` keeps the validated data and gives typed access to what other steps
need (template reference, QC thresholds, roles). :func:`task_problems_against_template` checks
that the task's objects exist in its template and use annotation types the template allows.
Example: ``Resources/tasks/thyroid-us-tirads-appendix-a.json`` (Appendix A).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

from RTSSBridgeLib.errors import ProblemListError

from .schemas import read_json, schema_problems
from .templates import LabelTemplate

SCHEMA = "task"
#: Defaults of the specification: Dice 0.75 (10.2.1.3), fusion 3 mm within 3-5 (8.4.1.5), 90 days (8.4.3.5).
DEFAULT_QC = {"dice_threshold": 0.75, "fusion_deviation_mm": 3.0, "time_deviation_days": 90, "sampling_ratio": 1.0}


class TaskError(ProblemListError):
    """A task definition breaks rules; ``problems`` lists each on one line. Remedy: fix the fields."""


@dataclass(frozen=True)
class QCThresholds:
    dice_threshold: float
    fusion_deviation_mm: float
    time_deviation_days: int
    sampling_ratio: float


@dataclass(frozen=True)
class TaskDefinition:
    """A validated task (the JSON data is kept as given; ``to_dict`` returns a copy)."""

    data: Dict[str, Any]

    @property
    def task_id(self) -> str:
        return str(self.data["task_id"])

    @property
    def template_id(self) -> str:
        return str(self.data["template"]["id"])

    @property
    def template_version(self) -> str:
        return str(self.data["template"]["version"])

    @property
    def template_file(self) -> Optional[str]:
        return self.data["template"].get("file")

    @property
    def qc(self) -> QCThresholds:
        q = {**DEFAULT_QC, **self.data["qc"]}
        return QCThresholds(float(q["dice_threshold"]), float(q["fusion_deviation_mm"]), int(q["time_deviation_days"]),
                            float(q["sampling_ratio"]))

    @property
    def reference_image(self) -> Optional[str]:
        return next((d["name"] for d in self.data["data"] if d["kind"] == "image" and d["role"] == "reference"), None)

    def people(self, role: str) -> List[str]:
        return [p for r in self.data["roles"] if r["role"] == role for p in r.get("people", [])]

    def to_dict(self) -> Dict[str, Any]:
        return copy.deepcopy(self.data)


def task_problems(data: Any) -> List[str]:
    """Every problem of a task's JSON data, one line each."""
    problems = schema_problems(SCHEMA, data)
    if problems:
        return problems
    names = [d["name"] for d in data["data"]]
    for n, name in enumerate(names):
        if names.index(name) != n:
            problems.append(f"data[{n}].name: duplicate data item {name}; rule: names are unique")
    images = [d for d in data["data"] if d["kind"] == "image"]
    references = [d["name"] for d in images if d["role"] == "reference"]
    if images and len(references) != 1:
        problems.append(f"data: {len(references)} reference image(s) {references}; rule: exactly one image is the "
                        "reference annotations are drawn on (R-8.4.1)")
    for n, item in enumerate(data["data"]):
        if item["kind"] == "image" and "modality" not in item:
            problems.append(f"data[{n}].modality: image {item['name']} has no modality")
        if item["kind"] != "image" and item["role"] != "auxiliary":
            problems.append(f"data[{n}].role: {item['kind']} item {item['name']} cannot be {item['role']}; "
                            "rule: only images are reference or moving")
    registration = data.get("mapping_rules", {}).get("registration")
    moving = [d["name"] for d in images if d["role"] == "moving"]
    if moving and (registration is None or registration.get("method") in (None, "none")):
        problems.append(f"mapping_rules.registration: moving image(s) {moving} but no registration method; "
                        "rule: multi-modal cases are registered before annotation (R-8.4.1)")
    if registration and registration.get("reference") and registration["reference"] not in references:
        problems.append(f"mapping_rules.registration.reference: {registration['reference']} is not the reference "
                        f"image ({', '.join(references) or 'none'})")
    roles = {r["role"] for r in data["roles"]}
    if "annotator" not in roles:
        problems.append("roles: no annotator role; rule: a task names who annotates")
    model = data.get("model_assisted")
    if model and model["enabled"] and "model" not in model:
        problems.append("model_assisted.model: model-assisted annotation without model name and version "
                        "(R-6.6 records them)")
    codes = [o["label_code"] for o in data["objects"]]
    for n, code in enumerate(codes):
        if codes.index(code) != n:
            problems.append(f"objects[{n}].label_code: {code} listed twice")
    return problems


def task_from_dict(data: Any, file: Optional[str] = None) -> TaskDefinition:
    problems = task_problems(data)
    if problems:
        raise TaskError(problems, file=file)
    return TaskDefinition(copy.deepcopy(data))


def read_task(path: str) -> TaskDefinition:
    return task_from_dict(read_json(path), file=path)


def task_problems_against_template(task: TaskDefinition, template: LabelTemplate) -> List[str]:
    """Problems of the task's objects in the light of its template (codes, types, attributes)."""
    problems = []
    if (task.template_id, task.template_version) != (template.id, template.version):
        problems.append(f"template: the task uses {task.template_id} {task.template_version}, the template given is "
                        f"{template.id} {template.version}")
    for n, obj in enumerate(task.data["objects"]):
        label = template.get(obj["label_code"])
        if label is None:
            problems.append(f"objects[{n}].label_code: {obj['label_code']} is not a label of {template.id}")
            continue
        for kind in obj["annotation_types"]:
            if kind not in label.annotation_types:
                problems.append(f"objects[{n}].annotation_types: {label.code} does not allow {kind} "
                                f"(template allows {', '.join(label.annotation_types)})")
        for key in obj.get("required_attributes", []):
            if label.attribute(key) is None:
                problems.append(f"objects[{n}].required_attributes: {label.code} has no attribute {key}")
    return problems
