"""MultiModalAnnotation: the annotation work of the extension (tasks, label templates, annotation
documents, fusion, image-text and image-structured-data links, review and versions).

Thin Slicer layer over ``MultiModalAnnotationLib`` that uses the RTSSBridge and QCMetrics modules.
For now the panel generates a realistic sample case (DICOM written with pydicom, with ground
truth beside it) and loads it, so that every later step has data to work on.

Valid Python 3.9; annotations are evaluated at run time by ``parameterNodeWrapper``.
"""

import os
import shutil
import tempfile
from typing import Annotated, Any, List, Tuple

import slicer
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
    """

    sampleKind: Annotated[str, Choice(list(SAMPLE_KINDS))] = SAMPLE_KINDS[0]
    sampleSeed: Annotated[int, WithinRange(0, MAX_PANEL_SEED)] = 0


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
