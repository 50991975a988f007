"""MultiModalAnnotation: the annotation work of the extension (tasks, label templates, annotation
documents, fusion, image-text and image-structured-data links, review and versions).

Thin Slicer layer over ``MultiModalAnnotationLib`` that uses the RTSSBridge and QCMetrics modules.
The panel generates a realistic sample case (DICOM written with pydicom, with ground truth
beside it) and loads it; its annotation section loads an approved label template (R-6.6) and a
task, creates a coded segmentation on the reference image, records the annotator, saves the
annotation document (Appendix C) and exports the package (R-6.11).

Valid Python 3.9; annotations are evaluated at run time by ``parameterNodeWrapper``.
"""

import os
import shutil
import tempfile
from typing import Annotated, Any, List, Tuple

import slicer
from slicer import vtkMRMLScalarVolumeNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

HOMEPAGE = "https://github.com/mmanno/SlicerMultiModalAnnotation"

#: Kinds of sample case, as ``mmanno sample`` lists them (RTSSBridgeLib.samples.KINDS; a contract
#: test keeps the two equal). Written out here because the parameter node needs them when this
#: file is imported, before the Python requirements are ensured.
SAMPLE_KINDS = ("ct-chest", "mr-brain-mets", "pet-ct", "us-thyroid", "xray-ra")
#: Largest seed the panel's spin box can hold (a 32-bit signed integer).
MAX_PANEL_SEED = 2147483647
#: Built-in label templates (``Resources/templates``; a test keeps this equal to the core's list).
BUILTIN_TEMPLATES = ("brain-mets-mr", "liver-ct-couinaud", "lung-ct", "ra-hand-foot-mtss", "thyroid-us-tirads")
#: Mask layouts of an export package.
PACKAGE_LAYOUTS = ("per_mask", "labelmap")
#: Registration models the panel offers (B-spline is on the command line: mmanno register --mode bspline).
REGISTRATION_MODES = ("rigid", "affine")


def _requireCore() -> None:
    """Install missing runtime packages (RTSSBridge owns the check) before any ``*Lib`` import."""
    from RTSSBridge import requireCore

    requireCore("MultiModalAnnotation")


#
# MultiModalAnnotation
#


class MultiModalAnnotation(ScriptedLoadableModule):
    """Module description for the module selector and the help panel."""

    def __init__(self, parent: Any) -> None:
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("Multi-Modal Annotation")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "MultiModalAnnotation")]
        self.parent.dependencies = ["RTSSBridge", "QCMetrics"]
        self.parent.contributors = ["MultiModalAnnotation developers"]
        self.parent.helpText = _(
            "Multi-modal precision annotation of medical images: label templates, annotation of registered "
            "images, links between image regions and report text or structured data, review and versioning. "
            "Start with a generated sample case (chest CT, brain MR with metastases, PET-CT, thyroid "
            'ultrasound, hand and foot X-ray). See the <a href="{homepage}">extension documentation</a>.'
        ).format(homepage=HOMEPAGE)
        self.parent.acknowledgementText = _(
            "Follows the draft standard for multi-modal model precision medical image data annotation. "
            "Uses RTSSBridge for DICOM and NIfTI input and QCMetrics for quality control."
        )


#
# MultiModalAnnotationParameterNode
#


@parameterNodeWrapper
class MultiModalAnnotationParameterNode:
    """
    sampleKind - which sample case to generate.
    sampleSeed - seed of the sample case (same kind and seed give the same files).
    templateName - built-in label template.
    referenceVolume - the image annotations are drawn on.
    annotator - pseudonymous annotator id.
    packageLayout - per_mask or labelmap.
    exportZip - write the package as a zip file.
    movingVolume - the series registered onto the reference image (R-8.4.1).
    registrationMode - rigid or affine.
    """

    sampleKind: Annotated[str, Choice(list(SAMPLE_KINDS))] = SAMPLE_KINDS[0]
    sampleSeed: Annotated[int, WithinRange(0, MAX_PANEL_SEED)] = 0
    templateName: Annotated[str, Choice(list(BUILTIN_TEMPLATES))] = "lung-ct"
    referenceVolume: vtkMRMLScalarVolumeNode
    annotator: str = ""
    packageLayout: Annotated[str, Choice(list(PACKAGE_LAYOUTS))] = PACKAGE_LAYOUTS[0]
    exportZip: bool = False
    movingVolume: vtkMRMLScalarVolumeNode
    registrationMode: Annotated[str, Choice(list(REGISTRATION_MODES))] = REGISTRATION_MODES[0]


#
# MultiModalAnnotationWidget
#


class MultiModalAnnotationWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Sample case generation (more panels come with the annotation core)."""

    def __init__(self, parent: Any = None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic: Any = None  # MultiModalAnnotationLogic once set up; the contract tests check its use
        self._parameterNode: Any = None  # a MultiModalAnnotationParameterNode while the widget is shown
        self._parameterNodeGuiTag: Any = None
        self._documentNode: Any = None  # the annotation document started from the panel

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/MultiModalAnnotation.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)

        self.logic = MultiModalAnnotationLogic()

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.generateSampleButton.connect("clicked(bool)", self.onGenerateSampleButton)
        self.ui.createSegmentationButton.connect("clicked(bool)", self.onCreateSegmentationButton)
        self.ui.saveDocumentButton.connect("clicked(bool)", self.onSaveDocumentButton)
        self.ui.exportPackageButton.connect("clicked(bool)", self.onExportPackageButton)
        self.ui.registerButton.connect("clicked(bool)", self.onRegisterButton)

        self.initializeParameterNode()
        with slicer.util.tryWithErrorDisplay(_("Failed to install the Python packages of MultiModalAnnotation.")):
            _requireCore()

    def cleanup(self) -> None:
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None

    def onSceneStartClose(self, caller: Any, event: Any) -> None:
        self.setParameterNode(None)

    def onSceneEndClose(self, caller: Any, event: Any) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        if self.logic is not None:
            self.setParameterNode(self.logic.getParameterNode())

    def setParameterNode(self, inputParameterNode: Any) -> None:
        """Bind the GUI to a MultiModalAnnotationParameterNode (or to nothing, with None)."""
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)

    def onGenerateSampleButton(self) -> None:
        from RTSSBridge import OperationCancelled, progressReporter, showVolumes

        if self._parameterNode is None:
            return
        kind = self._parameterNode.sampleKind
        seed = int(self._parameterNode.sampleSeed)
        outputDir = str(self.ui.sampleOutputPathLineEdit.currentPath or "").strip()
        if outputDir:
            self.ui.sampleOutputPathLineEdit.addCurrentPathToHistory()
        label = _("Writing and loading the {kind} sample...").format(kind=kind)
        dialog = slicer.util.createProgressDialog(parent=slicer.util.mainWindow(), maximum=0, labelText=label,
                                                  windowTitle=_("Sample case"))
        try:
            with slicer.util.tryWithErrorDisplay(_("Failed to generate the {kind} sample case.").format(kind=kind),
                                                 waitCursor=True):
                try:
                    root, nodes = self.logic.generateSample(kind, outputDir, seed, progress=progressReporter(dialog))
                except OperationCancelled:
                    self.ui.sampleStatusLabel.text = _("Cancelled.")
                    return
                dialog.close()
                showVolumes(nodes)
                self.ui.sampleStatusLabel.text = _(
                    "Wrote the {kind} sample (seed {seed}) to {root} and loaded {count} volume(s). "
                    "Ground truth is in its ground_truth folder."
                ).format(kind=kind, seed=seed, root=root, count=len(nodes))
        finally:
            dialog.close()


    def _templateChoice(self) -> str:
        """The template file when one is given, else the built-in template chosen."""
        path = str(self.ui.templateFilePathLineEdit.currentPath or "").strip()
        return path or str(self._parameterNode.templateName)

    def onCreateSegmentationButton(self) -> None:
        if self._parameterNode is None:
            return
        with slicer.util.tryWithErrorDisplay(_("Failed to create the segmentation from the label template."),
                                             waitCursor=True):
            taskPath = str(self.ui.taskFilePathLineEdit.currentPath or "").strip()
            self._documentNode, segmentation = self.logic.startAnnotation(
                self._templateChoice(), self._parameterNode.referenceVolume, self._parameterNode.annotator,
                taskPath=taskPath)
            self.ui.annotationStatusLabel.text = _(
                "Created {name} with {count} coded segments. Paint them in Segment Editor, then save or export."
            ).format(name=segmentation.GetName(), count=segmentation.GetSegmentation().GetNumberOfSegments())

    def _outputFolder(self) -> str:
        folder = str(self.ui.packageOutputPathLineEdit.currentPath or "").strip()
        if folder:
            self.ui.packageOutputPathLineEdit.addCurrentPathToHistory()
        return folder

    def onSaveDocumentButton(self) -> None:
        if self._parameterNode is None:
            return
        with slicer.util.tryWithErrorDisplay(_("Failed to save the annotation document."), waitCursor=True):
            path = self.logic.saveDocument(self._documentNode, self._outputFolder(), self._parameterNode.annotator)
            self.ui.annotationStatusLabel.text = _("Saved the annotation document to {path}.").format(path=path)

    def onExportPackageButton(self) -> None:
        if self._parameterNode is None:
            return
        with slicer.util.tryWithErrorDisplay(_("Failed to export the annotation package."), waitCursor=True):
            taskPath = str(self.ui.taskFilePathLineEdit.currentPath or "").strip()
            path = self.logic.exportPackage(self._documentNode, self._outputFolder(), self._parameterNode.annotator,
                                            layout=self._parameterNode.packageLayout,
                                            asZip=bool(self._parameterNode.exportZip), taskPath=taskPath)
            self.ui.annotationStatusLabel.text = _(
                "Exported the package to {path}; its manifest lists the SHA-256 of every file.").format(path=path)


    def onRegisterButton(self) -> None:
        if self._parameterNode is None:
            return
        with slicer.util.tryWithErrorDisplay(_("Failed to register the moving image."), waitCursor=True):
            _node, result, decision = self.logic.registerVolumes(
                self._parameterNode.referenceVolume, self._parameterNode.movingVolume,
                self._parameterNode.registrationMode, self._outputFolder())
            self.ui.fusionStatusLabel.text = _(
                "Registered ({mode}): metric {before:.3f} -> {after:.3f}; residual {translation:.2f} mm, "
                "{rotation:.2f} deg. Transform file: {path}").format(
                mode=result["mode"], before=result["metric_before"], after=result["metric_after"],
                translation=result.get("residual_translation_mm", float("nan")),
                rotation=result.get("residual_rotation_deg", float("nan")), path=result["transform_file"])
            self.ui.guardStatusLabel.text = (_("Annotation allowed: {reason}") if decision.allowed
                                             else _("Annotation refused: {reason}")).format(reason=decision.reason)


#
# MultiModalAnnotationLogic
#


class MultiModalAnnotationLogic(ScriptedLoadableModuleLogic):
    """Headless entry points of the module (usable from the Python console and other modules)."""

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)

    def getParameterNode(self) -> Any:
        """The module's parameters, typed (MultiModalAnnotationParameterNode)."""
        return MultiModalAnnotationParameterNode(super().getParameterNode())  # type: ignore[call-arg]  # the decorator adds it

    def sampleFolder(self, outputDir: str, kind: str, seed: int) -> str:
        """A folder that does not exist yet for a sample case: ``<outputDir>/<kind>-seed<seed>``,
        then ``-2``, ``-3``... (samples never overwrite). An empty ``outputDir`` means the
        system's temporary folder."""
        base = outputDir.strip() if outputDir else ""
        if not base:
            base = os.path.join(tempfile.gettempdir(), "MultiModalAnnotationSamples")
        candidate = os.path.join(base, f"{kind}-seed{seed}")
        number = 1
        while os.path.exists(candidate):
            number += 1
            candidate = os.path.join(base, f"{kind}-seed{seed}-{number}")
        return candidate

    def generateSample(self, kind: str, outputDir: str, seed: int = 0, progress: Any = None,
                       scene: Any = None) -> Tuple[str, List[Any]]:
        """Write sample case ``kind`` into a new folder below ``outputDir`` and load its DICOM
        series with RTSSBridge. Returns the case folder and the volume nodes."""
        if kind not in SAMPLE_KINDS:
            raise ValueError(f"kind: {kind!r} is not one of {', '.join(SAMPLE_KINDS)}")
        _requireCore()
        from RTSSBridge import RTSSBridgeLogic
        from RTSSBridgeLib.samples import write_sample

        case = write_sample(kind, self.sampleFolder(outputDir, kind, seed), seed=int(seed), progress=progress)
        root = os.fspath(case.root)
        nodes = RTSSBridgeLogic().loadDicom(os.path.join(root, "dicom"), progress=progress, scene=scene)
        return root, nodes

    def builtinTemplates(self) -> List[str]:
        """Ids of the built-in label templates."""
        _requireCore()
        from MultiModalAnnotationLib.templates import builtin_template_ids

        return builtin_template_ids()

    def startAnnotation(self, template: str, referenceVolumeNode: Any, annotator: str, taskPath: str = "",
                        scene: Any = None) -> Tuple[Any, Any]:
        """Start an annotation document on ``referenceVolumeNode`` with a segmentation made from the
        label template ``template`` (built-in id or file); returns (document node, segmentation node)."""
        _requireCore()
        from MultiModalAnnotationLib.documents import ImageRef, now_utc
        from MultiModalAnnotationLib.mrml.documents import start_document
        from MultiModalAnnotationLib.tasks import read_task, task_problems_against_template
        from MultiModalAnnotationLib.templates import load_template
        from RTSSBridgeLib.mrml.volumes import ATTR_MODALITY, ATTR_SERIES_UID, geometry_from_volume_node

        if referenceVolumeNode is None:
            raise ValueError(_("Choose the reference image the annotations are drawn on."))
        scene = scene or slicer.mrmlScene
        labelTemplate = load_template(template)
        taskId = "TASK_UNASSIGNED"
        if taskPath:
            task = read_task(taskPath)
            problems = task_problems_against_template(task, labelTemplate)
            if problems:
                raise ValueError(problems[0])
            taskId = task.task_id
        image = ImageRef(referenceVolumeNode.GetAttribute(ATTR_SERIES_UID) or referenceVolumeNode.GetID(),
                         referenceVolumeNode.GetAttribute(ATTR_MODALITY) or labelTemplate.modalities[0],
                         geometry_from_volume_node(referenceVolumeNode))
        stamp = now_utc()
        metadata = {"annotator": annotator.strip() or "unknown",
                    "software": {"name": "MultiModalAnnotation", "version": self._version()},
                    "timestamps": {"start": stamp, "end": stamp}, "qc": {"status": "pending", "issues": []},
                    "version": "v1.0", "audit": [{"time": stamp, "actor": annotator.strip() or "unknown",
                                                  "action": "created"}]}
        nodes = start_document(scene, labelTemplate, image, taskId, metadata, template_source=template)
        nodes.segmentation.SetReferenceImageGeometryParameterFromVolumeNode(referenceVolumeNode)
        return nodes.document_node, nodes.segmentation

    @staticmethod
    def _version() -> str:
        _requireCore()
        from MultiModalAnnotationLib import __version__

        return __version__

    def currentDocument(self, documentNode: Any, annotator: str = "", scene: Any = None) -> Tuple[Any, Any, Any]:
        """(document, masks, template) read from the scene, with the annotator and end time updated."""
        _requireCore()
        from MultiModalAnnotationLib.documents import now_utc
        from MultiModalAnnotationLib.mrml.documents import TEMPLATE_SOURCE, document_from_scene
        from MultiModalAnnotationLib.templates import load_template

        if documentNode is None:
            raise ValueError(_("Create the segmentation from a template first."))
        labelTemplate = load_template(documentNode.GetAttribute(TEMPLATE_SOURCE) or "")
        document, masks = document_from_scene(scene or slicer.mrmlScene, documentNode, labelTemplate)
        metadata = dict(document.metadata)
        if annotator.strip():
            metadata["annotator"] = annotator.strip()
        metadata["timestamps"] = {**metadata["timestamps"], "end": now_utc()}
        return document.replace(metadata=metadata), masks, labelTemplate

    def saveDocument(self, documentNode: Any, outputDir: str, annotator: str = "", scene: Any = None) -> str:
        """Write the document and its masks (NIfTI) into a new folder below ``outputDir``."""
        _requireCore()
        from MultiModalAnnotationLib.package import export_package

        document, masks, labelTemplate = self.currentDocument(documentNode, annotator, scene)
        target = self._newPath(outputDir, f"{document.task_id}-document", "")
        export_package(target, document, labelTemplate, masks=masks)
        return os.path.join(target, "annotation.json")

    def exportPackage(self, documentNode: Any, outputDir: str, annotator: str = "", layout: str = "per_mask",
                      asZip: bool = False, taskPath: str = "", scene: Any = None) -> str:
        """Export the package (folder or zip) into ``outputDir``; returns its path."""
        _requireCore()
        from MultiModalAnnotationLib.package import export_package
        from MultiModalAnnotationLib.tasks import read_task

        document, masks, labelTemplate = self.currentDocument(documentNode, annotator, scene)
        task = read_task(taskPath) if taskPath else None
        target = self._newPath(outputDir, f"{document.task_id}-package", ".zip" if asZip else "")
        return str(export_package(target, document, labelTemplate, task=task, masks=masks, layout=layout,
                                  as_zip=asZip))

    def registerVolumes(self, referenceVolumeNode: Any, movingVolumeNode: Any, mode: str = "rigid",
                        outputDir: str = "", thresholdMm: float = 3.0, scene: Any = None) -> Tuple[Any, Any, Any]:
        """Register the moving volume onto the reference (R-8.4.1): the transform file is written to
        ``outputDir``, the moving volume is placed under a new transform node. Returns
        (transform node, result dictionary, guard decision)."""
        _requireCore()
        from MultiModalAnnotationLib.mrml.fusion import register_volume_nodes

        if mode not in REGISTRATION_MODES:
            raise ValueError(f"mode: {mode!r} is not one of {', '.join(REGISTRATION_MODES)}")
        if referenceVolumeNode is None or movingVolumeNode is None:
            raise ValueError(_("Choose the reference image and the moving image."))
        path = self._newPath(outputDir, f"{movingVolumeNode.GetName()}-to-{referenceVolumeNode.GetName()}", ".h5")
        return register_volume_nodes(scene or slicer.mrmlScene, referenceVolumeNode, movingVolumeNode, path,
                                     mode=mode, threshold_mm=thresholdMm)

    @staticmethod
    def _newPath(outputDir: str, stem: str, suffix: str) -> str:
        base = outputDir.strip() or os.path.join(tempfile.gettempdir(), "MultiModalAnnotationExports")
        os.makedirs(base, exist_ok=True)
        candidate, number = os.path.join(base, stem + suffix), 1
        while os.path.exists(candidate):
            number += 1
            candidate = os.path.join(base, f"{stem}-{number}{suffix}")
        return candidate


#
# MultiModalAnnotationTest
#


class MultiModalAnnotationTest(ScriptedLoadableModuleTest):
    """Runs the scenarios of ``MultiModalAnnotationLib.mrml.scenarios`` (the same functions
    pytest runs) and the Logic's sample generation."""

    def setUp(self) -> None:
        slicer.mrmlScene.Clear()

    def runTest(self) -> None:
        self.setUp()
        self.test_MultiModalAnnotationScenarios()
        self.setUp()
        self.test_MultiModalAnnotationGenerateSample()
        self.setUp()
        self.test_MultiModalAnnotationTemplateToPackage()

    def test_MultiModalAnnotationScenarios(self) -> None:
        _requireCore()
        from MultiModalAnnotationLib.mrml.scenarios import scenarios
        from RTSSBridge import runScenarios

        runScenarios(self, scenarios())
        self.delayDisplay("Scenarios passed")

    def test_MultiModalAnnotationGenerateSample(self) -> None:
        logic = MultiModalAnnotationLogic()
        workdir = tempfile.mkdtemp(prefix="mmanno-sample-")
        try:
            with self.assertRaises(ValueError):
                logic.generateSample("no-such-kind", workdir)
            root, nodes = logic.generateSample("ct-chest", workdir, seed=1)
            self.assertEqual(os.path.dirname(root), workdir)
            self.assertTrue(os.path.isdir(os.path.join(root, "dicom")))
            self.assertEqual(len(nodes), 1)
            self.assertTrue(nodes[0].IsA("vtkMRMLScalarVolumeNode"))
            self.assertEqual(nodes[0].GetImageData().GetDimensions()[:2], (512, 512))
            # the same kind and seed again would go to a new folder, never over the first case
            self.assertNotEqual(logic.sampleFolder(workdir, "ct-chest", 1), root)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        self.delayDisplay("Sample generation passed")

    def test_MultiModalAnnotationTemplateToPackage(self) -> None:
        """Template -> segmentation on a loaded sample -> paint -> save and export the package."""
        import numpy as np

        _requireCore()
        logic = MultiModalAnnotationLogic()
        self.assertIn("lung-ct", logic.builtinTemplates())
        workdir = tempfile.mkdtemp(prefix="mmanno-annotation-")
        try:
            root, nodes = logic.generateSample("ct-chest", workdir, seed=2)
            with self.assertRaises(ValueError):
                logic.startAnnotation("lung-ct", None, "A01")
            documentNode, segmentation = logic.startAnnotation("lung-ct", nodes[0], "A01")
            self.assertEqual(segmentation.GetSegmentation().GetNthSegmentID(0), "LUNG_LEFT")
            from MultiModalAnnotationLib.mrml.documents import _oriented_mask
            from RTSSBridgeLib.mrml.volumes import geometry_from_volume_node

            grid = geometry_from_volume_node(nodes[0])
            painted = np.zeros(grid.array_shape, dtype=bool)
            painted[60:70, 200:240, 300:340] = True
            segmentation.GetSegmentation().GetSegment("LUNG_LEFT").AddRepresentation(
                "Binary labelmap", _oriented_mask(painted, grid))
            saved = logic.saveDocument(documentNode, workdir, "A02")
            self.assertTrue(os.path.isfile(saved))
            package = logic.exportPackage(documentNode, workdir, "A02", asZip=True)
            from MultiModalAnnotationLib.package import read_package

            read = read_package(package)
            self.assertEqual([a.label_code for a in read.document.annotations], ["LUNG_LEFT"])
            self.assertEqual(read.document.metadata["annotator"], "A02")
            self.assertTrue(np.array_equal(read.masks["LUNG_LEFT"].voxels, painted))
            self.assertTrue(root)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        self.delayDisplay("Template to package passed")
