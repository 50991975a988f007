"""MultiModalAnnotation: the annotation work of the extension (tasks, label templates, annotation
documents, fusion, image-text and image-structured-data links, review and versions).

Thin Slicer layer over ``MultiModalAnnotationLib`` that uses the RTSSBridge and QCMetrics modules.
The panel generates a realistic sample case (DICOM written with pydicom, with ground truth
beside it) and loads it; its annotation section loads an approved label template (R-6.6) and a
task, creates a coded segmentation on the reference image, records the annotator, saves the
annotation document (Appendix C) and exports the package (R-6.11). Its report section loads a
report into a text node, links a selected span to a segment or point with a semantic type,
runs the consistency aids, lists the links with their states and jumps to a link's region
(R-8.4.2); its structured-fields section imports a CSV/XLSX table against field definitions and
shows the case's records with units, flags and time-deviation tags (R-8.4.3).

Valid Python 3.9; annotations are evaluated at run time by ``parameterNodeWrapper``.
"""

import os
import shutil
import tempfile
from typing import Annotated, Any, Dict, List, Tuple

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
#: Review opinions (MultiModalAnnotationLib.provenance.review.OPINIONS; a test keeps them equal).
REVIEW_OPINIONS = ("accept", "request_change", "reject")
#: Semantic types of an image-text link (8.4.2.2), in the order of the panel's combo box.
SEMANTIC_TYPES = ("finding", "diagnosis", "attribute", "recommendation")
#: Built-in structured-field definitions (``Resources/structured``).
BUILTIN_FIELDS = ("seed001-clinical", "seed001-follow-up", "seed004-mtss")
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
    caseActor - pseudonymous id of the person reviewing in the case workflow section.
    reviewTarget - annotation id (or "case") a review opinion is about.
    reviewOpinion - accept, request_change or reject.
    reviewComment - why (recorded in the audit trail).
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
    caseActor: str = ""
    reviewTarget: str = "case"
    reviewOpinion: Annotated[str, Choice(list(REVIEW_OPINIONS))] = REVIEW_OPINIONS[0]
    reviewComment: str = ""
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
        self._reportNode: Any = None  # the report text node shown in the linking section

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
        self.ui.showCaseButton.connect("clicked(bool)", self.onShowCaseButton)
        self.ui.submitReviewButton.connect("clicked(bool)", self.onSubmitReviewButton)
        self.ui.loadReportButton.connect("clicked(bool)", self.onLoadReportButton)
        self.ui.linkSelectionButton.connect("clicked(bool)", self.onLinkSelectionButton)
        self.ui.checkLinksButton.connect("clicked(bool)", self.onCheckLinksButton)
        self.ui.linksTableWidget.connect("cellDoubleClicked(int,int)", self.onLinkCellDoubleClicked)
        self.ui.confirmConsistentButton.connect("clicked(bool)", self.onConfirmConsistentButton)
        self.ui.confirmInconsistentButton.connect("clicked(bool)", self.onConfirmInconsistentButton)
        self.ui.importTableButton.connect("clicked(bool)", self.onImportTableButton)
        self.ui.semanticTypeComboBox.addItems([_("Finding / sign"), _("Diagnosis"), _("Attribute description"),
                                               _("Recommendation")])
        self.ui.fieldsComboBox.addItems(list(BUILTIN_FIELDS))
        self.ui.registerButton.connect("clicked(bool)", self.onRegisterButton)
        self.ui.checkConsistencyButton.connect("clicked(bool)", self.onCheckConsistencyButton)
        self.ui.referenceVolumeSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.onAnnotationVolumeChanged)

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

    def _caseFolder(self) -> str:
        folder = str(self.ui.caseFolderPathLineEdit.currentPath or "").strip()
        if folder:
            self.ui.caseFolderPathLineEdit.addCurrentPathToHistory()
        return folder

    def _showCaseInfo(self, info: Any) -> None:
        summary = info["summary"]
        self.ui.caseStateLabel.text = _(
            "Case {case}: {state} (current version {current}, {events} events). Allowed next: {allowed}."
        ).format(case=info["case"], state=info["state"], current=summary.get("current") or "-",
                 events=summary.get("events", 0), allowed="; ".join(summary.get("allowed", [])))
        self.ui.caseHistoryListWidget.clear()
        self.ui.caseHistoryListWidget.addItems(info["lines"])

    def onShowCaseButton(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Failed to read the case."), waitCursor=True):
            info = self.logic.showCase(self._caseFolder(), self._documentNode)
            self._showCaseInfo(info)
            self.ui.workflowStatusLabel.text = _("Audit trail intact; segment status follows the case state.")

    def onSubmitReviewButton(self) -> None:
        if self._parameterNode is None:
            return
        with slicer.util.tryWithErrorDisplay(_("The review was not recorded."), waitCursor=True):
            info = self.logic.submitReview(self._caseFolder(), self._parameterNode.caseActor,
                                           self._parameterNode.reviewTarget, self._parameterNode.reviewOpinion,
                                           self._parameterNode.reviewComment, self._documentNode)
            self._showCaseInfo(info)
            self.ui.workflowStatusLabel.text = _("Recorded the review opinion in the audit trail.")


    # ------------------------------------------------------------------ image-text links
    def onLoadReportButton(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Failed to load the report."), waitCursor=True):
            path = str(self.ui.reportFilePathLineEdit.currentPath or "").strip()
            self._reportNode = self.logic.loadReport(self._documentNode, path)
            self.ui.reportTextEdit.setPlainText(self._reportNode.GetText())
            self.ui.targetComboBox.clear()
            self.ui.targetComboBox.addItems(self.logic.linkTargets(self._documentNode))
            self.ui.linkStatusLabel.text = _("Loaded the report; select a span, choose its type and target, "
                                             "then link it.")

    def onLinkSelectionButton(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Failed to link the selected text."), waitCursor=True):
            cursor = self.ui.reportTextEdit.textCursor()
            annotator = self._parameterNode.annotator if self._parameterNode else ""
            linkId = self.logic.addLink(self._documentNode, self._reportNode, cursor.selectionStart(),
                                        cursor.selectionEnd(), self.ui.targetComboBox.currentText,
                                        SEMANTIC_TYPES[max(self.ui.semanticTypeComboBox.currentIndex, 0)], annotator)
            self._showLinks()
            self.ui.linkStatusLabel.text = _("Added link {link}.").format(link=linkId)

    def onCheckLinksButton(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Failed to check the links."), waitCursor=True):
            counts = self.logic.checkLinks(self._documentNode)
            self._showLinks()
            self.ui.linkStatusLabel.text = _(
                "{consistent} consistent, {inconsistent} inconsistent (to confirm), {unchecked} unchecked."
            ).format(consistent=counts.get("consistent", 0), inconsistent=counts.get("inconsistent", 0),
                     unchecked=counts.get("unchecked", 0))

    @staticmethod
    def _fillTable(table: Any, rows: List[List[str]]) -> None:
        import qt

        table.clearContents()
        table.setRowCount(len(rows))
        for row, values in enumerate(rows):
            for column, text in enumerate(values):
                table.setItem(row, column, qt.QTableWidgetItem(text))
        table.resizeColumnsToContents()

    def _showLinks(self) -> None:
        self._fillTable(self.ui.linksTableWidget, self.logic.linkRows(self._documentNode))

    def onLinkCellDoubleClicked(self, row: int, column: int) -> None:
        with slicer.util.tryWithErrorDisplay(_("Failed to show the linked region."), waitCursor=True):
            item = self.ui.linksTableWidget.item(row, 0)
            if item is None:
                return
            centre = self.logic.linkRegionCentreRas(self._documentNode, item.text())
            slicer.modules.markups.logic().JumpSlicesToLocation(centre[0], centre[1], centre[2], True)

    def _selectedLinkId(self) -> str:
        rows = self.ui.linksTableWidget.selectionModel().selectedRows()
        if not rows:
            raise ValueError(_("Select a link in the table first."))
        return self.ui.linksTableWidget.item(rows[0].row(), 0).text()

    def _confirmSelectedLink(self, state: str) -> None:
        with slicer.util.tryWithErrorDisplay(_("Failed to record the decision."), waitCursor=True):
            annotator = self._parameterNode.annotator if self._parameterNode else ""
            linkId = self._selectedLinkId()
            self.logic.confirmLink(self._documentNode, linkId, state, self.ui.linkNoteLineEdit.text, annotator)
            self._showLinks()
            self.ui.linkStatusLabel.text = _("Recorded your decision on {link}.").format(link=linkId)

    def onConfirmConsistentButton(self) -> None:
        self._confirmSelectedLink("consistent")

    def onConfirmInconsistentButton(self) -> None:
        self._confirmSelectedLink("inconsistent")

    # ------------------------------------------------------------------ structured data
    def onImportTableButton(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Failed to import the table."), waitCursor=True):
            path = str(self.ui.tableFilePathLineEdit.currentPath or "").strip()
            self.logic.importTable(self._documentNode, path, self.ui.fieldsComboBox.currentText,
                                   self.ui.caseIdLineEdit.text)
            rows = self.logic.structuredRows(self._documentNode)
            self._fillTable(self.ui.structuredTableWidget, rows)
            self.ui.tableStatusLabel.text = _("Bound {count} value(s) of the case.").format(count=len(rows))

    def _showGuard(self, decision: Any) -> None:
        self.ui.guardStatusLabel.text = (_("Annotation allowed: {reason}") if decision.allowed
                                         else _("Annotation refused: {reason}")).format(reason=decision.reason)

    def onAnnotationVolumeChanged(self, volumeNode: Any = None) -> None:
        """The fusion guard's state (R-8.4.1.4) for the image chosen to annotate on, as soon as it is chosen."""
        if volumeNode is None:
            self.ui.guardStatusLabel.text = ""
            return
        self._showGuard(self.logic.annotationGuard(volumeNode))

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
            self._showGuard(decision)

    def onCheckConsistencyButton(self) -> None:
        if self._parameterNode is None:
            return
        with slicer.util.tryWithErrorDisplay(_("Failed to check the cross-modality consistency."), waitCursor=True):
            results = self.logic.checkConsistency(
                self._parameterNode.referenceVolume, self.ui.referenceSegmentationSelector.currentNode(),
                self.ui.otherSegmentationSelector.currentNode(), self._parameterNode.movingVolume)
            lines = [(_("{structure}: FLAGGED - centroid {centroid:.2f} mm, HD95 {hd95:.2f} mm > {threshold:g} mm, "
                        "readjust") if r.flagged else
                      _("{structure}: passed - centroid {centroid:.2f} mm, HD95 {hd95:.2f} mm <= {threshold:g} mm")
                      ).format(structure=r.structure, centroid=r.centroid_distance_mm, hd95=r.hd95_mm,
                               threshold=r.threshold_mm) for r in results]
            self.ui.consistencyStatusLabel.text = "\n".join(lines)


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
        decision = self.annotationGuard(referenceVolumeNode, scene=scene)
        if not decision.allowed:  # the fusion guard (R-8.4.1.4): never annotate an unaligned modality
            raise ValueError(_("Annotation refused: {reason}").format(reason=decision.reason))
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

    def showCase(self, caseFolder: str, documentNode: Any = None, scene: Any = None) -> Any:
        """Read the case in ``caseFolder`` (trail verified), keep it in the scene's case node, and set
        the status of the document's segments from the case state. Returns the case node's content
        (case, folder, state, summary, history) and ``lines``, the history as text."""
        _requireCore()
        from MultiModalAnnotationLib.mrml.documents import REF_SEGMENTATION
        from MultiModalAnnotationLib.mrml.workflow import (
            apply_case_state,
            history_lines,
            read_case_node,
            write_case_node,
        )
        from MultiModalAnnotationLib.provenance.case import Case

        if not caseFolder:
            raise ValueError(_("Choose the case folder."))
        scene = scene or slicer.mrmlScene
        case = Case(caseFolder)
        state = case.state()
        history = case.history()
        node = write_case_node(scene, state, caseFolder, history)
        segmentation = documentNode.GetNodeReference(REF_SEGMENTATION) if documentNode is not None else None
        if segmentation is not None:
            apply_case_state(segmentation, state)
        info = read_case_node(node)
        info["lines"] = history_lines(history)
        return info

    def submitReview(self, caseFolder: str, actor: str, target: str, opinion: str, comment: str = "",
                     documentNode: Any = None, scene: Any = None) -> Any:
        """Record a reviewer's opinion on ``target`` (annotation id or ``case``) in the case's audit
        trail, then show the case again (see :meth:`showCase`)."""
        _requireCore()
        from MultiModalAnnotationLib.provenance.case import Case

        if not caseFolder:
            raise ValueError(_("Choose the case folder."))
        Case(caseFolder).review(actor.strip(), {target.strip() or "case": opinion}, comment.strip() or None)
        return self.showCase(caseFolder, documentNode, scene)
    # ------------------------------------------------------------------ image-text links
    def loadReport(self, documentNode: Any, path: str, reportId: str = "", scene: Any = None) -> Any:
        """Add the UTF-8 report ``path`` to the document as a text node; returns the node."""
        _requireCore()
        from MultiModalAnnotationLib.linking_cli import read_report_file
        from MultiModalAnnotationLib.links import add_report
        from MultiModalAnnotationLib.mrml.links import add_report_node
        from MultiModalAnnotationLib.reports_text import Report

        if not path:
            raise ValueError(_("Choose the report file."))
        document, _masks, _template = self.currentDocument(documentNode, scene=scene)
        stem = "".join(c if c.isalnum() or c in "_.-" else "_" for c in os.path.splitext(os.path.basename(path))[0])
        report = Report(reportId or f"RPT_{stem}"[:60], read_report_file(path), title=os.path.basename(path))
        add_report(document, report)  # validates (a new id)
        return add_report_node(documentNode, report)

    def linkTargets(self, documentNode: Any, scene: Any = None) -> List[str]:
        """Ids of the annotations a report span can be linked to (segments, points, boxes, polygons)."""
        document, _masks, _template = self.currentDocument(documentNode, scene=scene)
        return [a.id for a in document.annotations if a.type in ("mask", "point", "bbox", "polygon")]

    def addLink(self, documentNode: Any, reportNode: Any, startUtf16: int, endUtf16: int, targetId: str,
                semanticType: str, annotator: str = "", scene: Any = None) -> str:
        """Link the span of ``reportNode`` selected in a Qt text widget (UTF-16 positions) to the
        annotation ``targetId``; returns the new link id."""
        _requireCore()
        from MultiModalAnnotationLib.links import add_link
        from MultiModalAnnotationLib.mrml.links import ATTR_REPORT_ID, store_links
        from MultiModalAnnotationLib.reports_text import utf16_to_code_point

        if reportNode is None:
            raise ValueError(_("Load a report first."))
        text = reportNode.GetText() or ""
        start, end = utf16_to_code_point(text, int(startUtf16)), utf16_to_code_point(text, int(endUtf16))
        document, _masks, _template = self.currentDocument(documentNode, annotator, scene)
        document, link = add_link(document, reportNode.GetAttribute(ATTR_REPORT_ID), min(start, end),
                                  max(start, end), targetId, semanticType, actor=annotator.strip() or "unknown")
        store_links(documentNode, document)
        return link.id

    def checkLinks(self, documentNode: Any, scene: Any = None) -> Dict[str, int]:
        """Run the consistency aids on every link (proposals; a person's decision is kept); returns
        the count of links per state."""
        _requireCore()
        from MultiModalAnnotationLib.consistency import check_links
        from MultiModalAnnotationLib.mrml.links import store_links

        document, masks, labelTemplate = self.currentDocument(documentNode, scene=scene)
        checked, results = check_links(document, labelTemplate, masks)
        store_links(documentNode, checked)
        counts: Dict[str, int] = {}
        for result in results:
            counts[result.state] = counts.get(result.state, 0) + 1
        return counts

    def confirmLink(self, documentNode: Any, linkId: str, state: str, note: str, annotator: str,
                    scene: Any = None) -> None:
        """A person's decision on a link's consistency (kept by later automatic checks; an
        inconsistent link needs a note and becomes a QC error)."""
        _requireCore()
        from MultiModalAnnotationLib.links import confirm_consistency
        from MultiModalAnnotationLib.mrml.links import store_links

        document, _masks, _template = self.currentDocument(documentNode, scene=scene)
        store_links(documentNode, confirm_consistency(document, linkId, state, note, annotator.strip() or "unknown"))

    def linkRows(self, documentNode: Any, scene: Any = None) -> List[List[str]]:
        """Rows of the links table: id, quoted text, target, semantic type, state, note."""
        _requireCore()
        from MultiModalAnnotationLib.links import report_links_of

        document, _masks, _template = self.currentDocument(documentNode, scene=scene)
        return [[link.id, link.text.quote, link.target, link.semantic_type,
                 link.consistency.state + (" ✓" if link.consistency.source == "person" else "")
                 + ("" if link.anchor_state == "anchored" else f" ({link.anchor_state})"),
                 link.consistency.note] for link in report_links_of(document).links]

    def linkRegionCentreRas(self, documentNode: Any, linkId: str, scene: Any = None) -> List[float]:
        """RAS centre of the region a link points at (to jump the slice views there)."""
        _requireCore()
        from MultiModalAnnotationLib.consistency import region_facts
        from MultiModalAnnotationLib.links import report_links_of
        from RTSSBridgeLib.geometry import lps_to_ras

        document, masks, labelTemplate = self.currentDocument(documentNode, scene=scene)
        link = report_links_of(document).link(linkId)
        facts = region_facts(document, link.target, labelTemplate, masks)
        if facts.centroid_lps is None:
            raise ValueError(_("The linked annotation has no position."))
        return [float(v) for v in lps_to_ras(facts.centroid_lps)]

    # ------------------------------------------------------------------ structured data
    def importTable(self, documentNode: Any, path: str, fields: str, caseId: str, imageDate: str = "",
                    scene: Any = None) -> List[Any]:
        """Import a CSV/XLSX table against ``fields`` (built-in id or file), bind the records of case
        ``caseId`` to the document and show them as table nodes; returns the table nodes."""
        _requireCore()
        from MultiModalAnnotationLib.linking_cli import load_fields
        from MultiModalAnnotationLib.mrml.links import store_tables
        from MultiModalAnnotationLib.structured import CaseKeys, ImageKey, add_table, read_table

        if not path:
            raise ValueError(_("Choose the table file."))
        if not caseId.strip():
            raise ValueError(_("Enter the case ID the records are bound by."))
        document, _masks, _template = self.currentDocument(documentNode, scene=scene)
        table = read_table(path, load_fields(fields))
        keys = CaseKeys(caseId.strip(), (ImageKey(document.image.uid, "", imageDate),))
        return store_tables(documentNode, add_table(document, table, keys))

    def structuredRows(self, documentNode: Any, scene: Any = None) -> List[List[str]]:
        """Rows of the structured-fields view: table, row, field, value, unit, flag or time-deviation tag."""
        _requireCore()
        from MultiModalAnnotationLib.structured import FieldDefinitions

        document, _masks, _template = self.currentDocument(documentNode, scene=scene)
        rows: List[List[str]] = []
        for table in (document.structured_data or {}).get("tables", []):
            fields = FieldDefinitions.from_dict(table["fields"])
            for record in table["records"]:
                deviation = record.get("time_deviation") or {}
                for name in table["columns"]:
                    definition = fields.get(name)
                    value = record["values"].get(name)
                    note = record.get("flags", {}).get(name, "")
                    if deviation.get("field") == name and deviation.get("tag"):
                        note = _("time deviation: {days} days").format(days=deviation["days"])
                    rows.append([table["id"], str(record["row"]), name, "" if value is None else str(value),
                                 definition.unit if definition is not None else "", note])
        return rows

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

    def annotationGuard(self, volumeNode: Any, scene: Any = None) -> Any:
        """The fusion guard's decision (R-8.4.1.4) for annotating on ``volumeNode``: the reference,
        a registered copy whose registration passes, or refused with the reason."""
        _requireCore()
        from MultiModalAnnotationLib.mrml.fusion import annotation_guard

        return annotation_guard(scene or slicer.mrmlScene, volumeNode)

    def checkConsistency(self, referenceVolumeNode: Any, referenceSegmentationNode: Any, otherSegmentationNode: Any,
                         otherVolumeNode: Any = None, thresholdMm: float = 3.0, scene: Any = None) -> List[Any]:
        """Cross-modality consistency check (R-8.4.1.5) of every structure painted in both
        segmentations: centroid distance and HD95 in the reference frame, flagged above the threshold
        (3-5 mm). Returns ``ConsistencyResult`` objects (``to_dict()``, ``reason()``)."""
        _requireCore()
        from MultiModalAnnotationLib.mrml.fusion import segment_consistency

        return segment_consistency(scene or slicer.mrmlScene, referenceVolumeNode, referenceSegmentationNode,
                                   otherSegmentationNode, otherVolumeNode, thresholdMm)

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
