"""Scene adapter: a label template becomes a segmentation node whose segments carry the label
codes as Slicer terminology entries, names and colours (R-6.6 "load the approved template into
the annotation tool"); the template's terminology is loaded into Slicer's terminology logic.

Segment ID = label code; segment tags: ``TerminologyEntry`` (Slicer's serialized entry, what the
Segment Editor's terminology selector reads), ``MultiModalAnnotation.LabelCode`` and
``MultiModalAnnotation.Template`` (``id version``). Takes the scene as an argument; no
application, Qt or file dialogs.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any, Iterable, Optional

import slicer

from RTSSBridgeLib.fileio import write_json_atomic

from ..templates import LabelTemplate
from ..templates.exports import slicer_terminology, slicer_terminology_entry

TAG_TERMINOLOGY = "TerminologyEntry"
TAG_LABEL_CODE = "MultiModalAnnotation.LabelCode"
TAG_TEMPLATE = "MultiModalAnnotation.Template"
TAG_ANNOTATION = "MultiModalAnnotation.Annotation"


def load_terminology(template: LabelTemplate, logic: Any = None, folder: Optional[str] = None,
                     locale: str = "en") -> str:
    """Write the template's ``.term.json`` and load it into ``logic`` (a
    ``vtkSlicerTerminologiesModuleLogic``; a new one when None). Returns the context name."""
    logic = logic or slicer.vtkSlicerTerminologiesModuleLogic()
    folder = folder or tempfile.mkdtemp(prefix="mmanno-terminology-")
    path = os.path.join(folder, f"{template.id}-{template.version}.term.json")
    write_json_atomic(path, slicer_terminology(template, locale))
    name = logic.LoadTerminologyFromFile(path)
    if not name:
        raise ValueError(f"{path}: Slicer's terminology logic did not load the exported terminology")
    return str(name)


def segmentation_from_template(scene: Any, template: LabelTemplate, reference_volume: Any = None,
                               codes: Optional[Iterable[str]] = None, name: Optional[str] = None,
                               locale: str = "en") -> Any:
    """A new segmentation node with one empty segment per label that has a labelmap value (or per
    code in ``codes``), coded, named and coloured as the template says."""
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name or f"{template.title.get(locale, template.id)}")
    node.CreateDefaultDisplayNodes()
    if reference_volume is not None:
        node.SetReferenceImageGeometryParameterFromVolumeNode(reference_volume)
    wanted = list(codes) if codes is not None else [label.code for label in template.labelmap_labels()]
    segmentation = node.GetSegmentation()
    for code in wanted:
        label = template.label(code)
        # An empty binary labelmap as the source representation (what AddEmptySegment makes in
        # the application; built here so it does not depend on the converter rules being registered).
        segment = slicer.vtkSegment()
        segment.SetName(label.display_name(locale))
        segment.SetColor(*[c / 255.0 for c in (label.color or (128, 128, 128))])
        segment.AddRepresentation(segmentation.GetSourceRepresentationName(), slicer.vtkOrientedImageData())
        if not segmentation.AddSegment(segment, code):
            raise ValueError(f"segment {code} could not be added to {node.GetName()}")
        segment.SetTag(TAG_TERMINOLOGY, slicer_terminology_entry(template, label, locale))
        segment.SetTag(TAG_LABEL_CODE, label.code)
        segment.SetTag(TAG_TEMPLATE, f"{template.id} {template.version}")
    node.SetAttribute(TAG_TEMPLATE, f"{template.id} {template.version}")
    return node


def segment_label_code(segment: Any) -> str:
    """The label code a segment carries (empty when none)."""
    import vtk

    value = vtk.reference("")
    return str(value) if segment.GetTag(TAG_LABEL_CODE, value) else ""
