"""RTSSBridge: DICOM series and NIfTI images into the scene, with admission problems listed.

Thin Slicer layer (ARCHITECTURE.md, layer 3) over ``RTSSBridgeLib`` (the core) and
``RTSSBridgeLib.mrml`` (the scene adapters). Also the home of the extension's first-use
dependency check (:func:`ensureRequirements`), which the other two modules import.

This file must stay valid Python 3.9 (Slicer 5.8) and is read by ``parameterNodeWrapper``,
which evaluates annotations at run time: ``typing.Optional``/``List``, no ``X | Y``.
"""

import importlib
import importlib.metadata
import importlib.util
import logging
import os
import shutil
import tempfile
from typing import Annotated, Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import slicer
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import Choice, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

#: Called with (done, total) by long operations; may raise :class:`OperationCancelled`.
ProgressCallback = Callable[[int, int], None]

HOMEPAGE = "https://github.com/mmanno/SlicerMultiModalAnnotation"
#: Formats the panel exports a segmentation to (values of the format combo box and of the logic).
EXPORT_FORMATS = ("RTSS", "SEG", "NIfTI")


#
# First-use dependencies (shared by the three modules of the extension)
#

#: Requirement names whose import name differs from the distribution name.
_IMPORT_NAMES = {"pyyaml": "yaml", "scikit-image": "skimage", "pillow": "PIL", "python-dateutil": "dateutil"}
_requirementsState = {"satisfied": False}


class OperationCancelled(Exception):
    """The user pressed Cancel in a progress dialog. Nothing more is loaded; what was already
    added to the scene stays."""


def requirementsPath() -> str:
    """The extension's ``Resources/requirements.txt``.

    Installed, every scripted module of the extension sits in one folder and the shared
    ``Resources`` folder is beside them; in the source tree it is one level up from here.
    """
    here = os.path.dirname(os.path.abspath(__file__))
    candidates = (os.path.join(here, "Resources", "requirements.txt"),
                  os.path.join(here, os.pardir, "Resources", "requirements.txt"))
    for candidate in candidates:
        if os.path.isfile(candidate):
            return os.path.normpath(candidate)
    raise FileNotFoundError(f"requirements.txt not found; looked in {[os.path.normpath(c) for c in candidates]}")


def readRequirements(path: str) -> List[str]:
    """Requirement specifiers of a requirements file (comments, blank lines and options skipped)."""
    with open(path, encoding="utf-8") as f:
        lines = [line.split("#", 1)[0].strip() for line in f]
    return [line for line in lines if line and not line.startswith("-")]


def _requirementName(requirement: str) -> str:
    name = requirement.split(";", 1)[0]
    for separator in "<>=!~[ @":
        name = name.split(separator, 1)[0]
    return name.strip()


def missingRequirements(requirements: Sequence[str]) -> List[str]:
    """The requirements that are not satisfied in this Python.

    A requirement is missing when its module cannot be found (``importlib.util.find_spec``) or,
    when ``packaging`` is available (Slicer ships it), when the installed version is outside
    the specifier. A module that imports but has no distribution metadata is accepted.
    """
    missing = []
    for requirement in requirements:
        name = _requirementName(requirement)
        module = _IMPORT_NAMES.get(name.lower(), name.replace("-", "_"))
        if importlib.util.find_spec(module) is None:
            missing.append(requirement)
            continue
        try:
            from packaging.requirements import Requirement

            parsed = Requirement(requirement)
            installed = importlib.metadata.version(parsed.name)
        except ImportError:  # no packaging, or no metadata (PackageNotFoundError is an ImportError)
            continue
        if parsed.specifier and not parsed.specifier.contains(installed, prereleases=True):
            missing.append(requirement)
    return missing


def _hasMainWindow() -> bool:
    app = getattr(slicer, "app", None)
    return app is not None and not app.commandOptions().noMainWindow


def ensureRequirements(requester: str = "MultiModalAnnotation", interactive: Optional[bool] = None) -> bool:
    """Install the missing packages of ``Resources/requirements.txt`` with ``slicer.util.pip_install``.

    Must run before any ``*Lib`` import. With a main window the user confirms first (a dialog
    listing the packages); without one (``--no-main-window``, tests) a log line says what is
    installed. Returns False when the user declines; raises ``RuntimeError`` when packages are
    still missing after installation.
    """
    requirements = readRequirements(requirementsPath())
    missing = missingRequirements(requirements)
    if not missing:
        return True
    if interactive is None:
        interactive = _hasMainWindow()
    packages = ", ".join(missing)
    if interactive:
        question = _("{requester} needs Python packages that are not installed yet:\n\n{packages}\n\n"
                     "Install them now? This needs an internet connection and may take a minute.")
        if not slicer.util.confirmOkCancelDisplay(question.format(requester=requester, packages=packages),
                                                  windowTitle=_("Install Python packages")):
            return False
        with slicer.util.WaitCursor():
            slicer.util.pip_install(missing)
    else:
        logging.info(f"{requester}: installing missing Python packages: {packages}")
        slicer.util.pip_install(missing)
    importlib.invalidate_caches()
    still = missingRequirements(requirements)
    if still:
        raise RuntimeError(f"{requester}: Python packages still missing after installation: {', '.join(still)}")
    return True


def requireCore(requester: str = "MultiModalAnnotation") -> None:
    """Ensure the requirements once per session, before importing a ``*Lib`` package."""
    if _requirementsState["satisfied"]:
        return
    if not ensureRequirements(requester):
        raise RuntimeError(f"{requester} cannot run without its Python packages "
                           f"({', '.join(readRequirements(requirementsPath()))}); they were not installed")
    _requirementsState["satisfied"] = True


def progressReporter(dialog: Any) -> ProgressCallback:
    """A progress callback that drives a ``qt.QProgressDialog`` and honours its Cancel button."""

    def report(done: int, total: int) -> None:
        dialog.maximum = max(int(total), 1)
        dialog.value = int(done)
        slicer.app.processEvents()
        if dialog.wasCanceled:
            raise OperationCancelled()

    return report


def showVolumes(nodes: Sequence[Any]) -> None:
    """Show the first image volume as background and the first labelmap as label layer."""
    images = [n for n in nodes if not n.IsA("vtkMRMLLabelMapVolumeNode")]
    labels = [n for n in nodes if n.IsA("vtkMRMLLabelMapVolumeNode")]
    if images or labels:
        slicer.util.setSliceViewerLayers(background=images[0] if images else "keep-current",
                                         label=labels[0] if labels else "keep-current", fit=True)


def runScenarios(testCase: Any, scenarios: Mapping[str, Callable[[Any, str], None]]) -> None:
    """Run scenario functions (``scenario_<name>(scene, workdir)``) against ``slicer.mrmlScene``,
    each in a fresh scene state and a temporary folder that is removed afterwards."""
    for name, scenario in scenarios.items():
        testCase.delayDisplay(f"Scenario {name}")
        slicer.mrmlScene.Clear()
        workdir = tempfile.mkdtemp(prefix=f"mmanno-{name}-")
        try:
            scenario(slicer.mrmlScene, workdir)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)


#
# RTSSBridge
#


class RTSSBridge(ScriptedLoadableModule):
    """Module description for the module selector and the help panel."""

    def __init__(self, parent: Any) -> None:
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("RTSS Bridge")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "MultiModalAnnotation")]
        self.parent.dependencies = []
        self.parent.contributors = ["MultiModalAnnotation developers"]
        self.parent.helpText = _(
            "Load DICOM series and NIfTI images into the scene with their exact geometry, and list every "
            "problem found on the way (missing or duplicated slices, split series, undecodable compression, "
            "files that are not DICOM). NIfTI files can be loaded as image or labelmap volumes. The Intake section "
            "checks a received folder against an admission profile, de-identifies it, verifies that no identifying "
            "value is left and loads only the de-identified copy. "
            "Structures: import an RT Structure Set, DICOM SEG or NIfTI labelmap onto a volume as a segmentation "
            "(contours matched to slices by reference and position, every defect listed, ROI names mapped to the "
            "label template's codes), and export a segmentation as RT Structure Set, DICOM SEG or NIfTI. "
            'See the <a href="{homepage}#rtssbridge">module documentation</a>.'
        ).format(homepage=HOMEPAGE)
        self.parent.acknowledgementText = _(
            "Part of the MultiModalAnnotation extension. In the DICOM browser, SlicerRT keeps loading RT Structure "
            "Sets; this module adds direct file import and export with reference checks and template mapping."
        )


#
# RTSSBridgeParameterNode
#


@parameterNodeWrapper
class RTSSBridgeParameterNode:
    """
    loadNiftiAsLabelmap - load a NIfTI file as a labelmap volume instead of an image volume.
    structuresVolume - the volume an imported RTSS / SEG / labelmap is drawn on.
    exportSegmentation - the segmentation to export.
    exportVolume - the volume whose series the export references (its grid is the export's grid).
    exportFormat - RTSS, SEG or NIfTI.
    """

    loadNiftiAsLabelmap: bool = False
    structuresVolume: vtkMRMLScalarVolumeNode
    exportSegmentation: vtkMRMLSegmentationNode
    exportVolume: vtkMRMLScalarVolumeNode
    exportFormat: Annotated[str, Choice(list(EXPORT_FORMATS))] = EXPORT_FORMATS[0]


#
# RTSSBridgeWidget
#


class RTSSBridgeWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Inspect a DICOM folder or NIfTI file, then load all or the selected series; import structures
    (RTSS, DICOM SEG, NIfTI labelmap) onto a volume and export a segmentation, listing every warning."""

    def __init__(self, parent: Any = None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic: Any = None  # RTSSBridgeLogic once set up; the contract tests check its use
        self._parameterNode: Any = None  # a RTSSBridgeParameterNode while the widget is shown
        self._parameterNodeGuiTag: Any = None
        self._inspected: List[Dict[str, Any]] = []
        self._inspectedPath = ""

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/RTSSBridge.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)

        self.logic = RTSSBridgeLogic()

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.inputPathLineEdit.connect("currentPathChanged(QString)", self.onInputPathChanged)
        self.ui.browseFolderButton.connect("clicked(bool)", self.onBrowseFolderButton)
        self.ui.inspectButton.connect("clicked(bool)", self.onInspectButton)
        self.ui.seriesTableWidget.connect("itemSelectionChanged()", self.onSeriesSelectionChanged)
        self.ui.loadSelectedButton.connect("clicked(bool)", self.onLoadSelectedButton)
        self.ui.loadAllButton.connect("clicked(bool)", self.onLoadAllButton)
        self._setupIntake()
        self.ui.structuresPathLineEdit.connect("currentPathChanged(QString)", self.onStructuresInputChanged)
        self.ui.structuresVolumeSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.onStructuresInputChanged)
        self.ui.importStructuresButton.connect("clicked(bool)", self.onImportStructuresButton)
        self.ui.exportSegmentationSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.onStructuresInputChanged)
        self.ui.exportVolumeSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.onStructuresInputChanged)
        self.ui.exportPathLineEdit.connect("currentPathChanged(QString)", self.onStructuresInputChanged)
        self.ui.exportStructuresButton.connect("clicked(bool)", self.onExportStructuresButton)

        self.initializeParameterNode()
        self._updateButtons()
        # Offer to install missing packages when the module is first opened, not at the first click.
        with slicer.util.tryWithErrorDisplay(_("Failed to install the Python packages of MultiModalAnnotation.")):
            requireCore(_("RTSS Bridge"))

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
        """Bind the GUI to a RTSSBridgeParameterNode (or to nothing, with None)."""
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)

    # ------------------------------------------------------------------ state
    def _currentPath(self) -> str:
        return str(self.ui.inputPathLineEdit.currentPath or "").strip()

    def _selectedRows(self) -> List[int]:
        return sorted({index.row() for index in self.ui.seriesTableWidget.selectionModel().selectedRows()})

    def _updateButtons(self) -> None:
        path = self._currentPath()
        self.ui.inspectButton.enabled = bool(path) and os.path.exists(path)
        inspected = bool(self._inspected) and self._inspectedPath == path
        self.ui.loadAllButton.enabled = inspected
        self.ui.loadSelectedButton.enabled = inspected and bool(self._selectedRows())
        self._updateIntakeButton()
        structures = str(self.ui.structuresPathLineEdit.currentPath or "").strip()
        self.ui.importStructuresButton.enabled = (bool(structures) and os.path.isfile(structures)
                                                  and self.ui.structuresVolumeSelector.currentNode() is not None)
        self.ui.exportStructuresButton.enabled = (self.ui.exportSegmentationSelector.currentNode() is not None
                                                  and self.ui.exportVolumeSelector.currentNode() is not None
                                                  and bool(str(self.ui.exportPathLineEdit.currentPath or "").strip()))

    # ------------------------------------------------------------------ slots
    def onInputPathChanged(self, path: str) -> None:
        if path != self._inspectedPath:
            self._inspected = []
            self.ui.seriesTableWidget.setRowCount(0)
            self.ui.problemsListWidget.clear()
            self.ui.statusLabel.text = ""
        self._updateButtons()

    def onBrowseFolderButton(self) -> None:
        import qt

        start = self._currentPath() or os.path.expanduser("~")
        folder = qt.QFileDialog.getExistingDirectory(slicer.util.mainWindow(), _("Choose a DICOM folder"), start)
        if folder:
            self.ui.inputPathLineEdit.currentPath = folder

    def onInspectButton(self) -> None:
        path = self._currentPath()
        self.ui.inputPathLineEdit.addCurrentPathToHistory()
        dialog = slicer.util.createProgressDialog(parent=slicer.util.mainWindow(), maximum=0,
                                                  labelText=_("Reading headers..."), windowTitle=_("Inspect"))
        try:
            with slicer.util.tryWithErrorDisplay(_("Failed to inspect {path}.").format(path=path), waitCursor=True):
                try:
                    entries = self.logic.inspect(path, progress=progressReporter(dialog))
                except OperationCancelled:
                    self.ui.statusLabel.text = _("Inspection cancelled.")
                    return
                self._inspected = entries
                self._inspectedPath = path
                self._showInspection()
        finally:
            dialog.close()
            self._updateButtons()

    def onSeriesSelectionChanged(self) -> None:
        self._showProblems()
        self._updateButtons()

    def onLoadSelectedButton(self) -> None:
        rows = self._selectedRows()
        self._load([(self._inspected[r]["series_uid"], int(self._inspected[r]["part"])) for r in rows])

    def onLoadAllButton(self) -> None:
        self._load(None)

    # ------------------------------------------------------------------ intake (check -> de-identify -> load)
    def _setupIntake(self) -> None:
        """Fill the profile lists of the intake section and connect it (R-6.3, R-7.3)."""
        with slicer.util.tryWithErrorDisplay(_("Failed to list the admission and de-identification profiles.")):
            self.ui.intakeAdmissionProfileComboBox.clear()
            self.ui.intakeAdmissionProfileComboBox.addItems(self.logic.admissionProfiles())
            self.ui.intakeDeidProfileComboBox.clear()
            self.ui.intakeDeidProfileComboBox.addItems(self.logic.deidProfiles())
        self.ui.intakeOutputPathLineEdit.connect("currentPathChanged(QString)", self.onIntakeOutputChanged)
        self.ui.intakeKeyPathLineEdit.connect("currentPathChanged(QString)", self.onIntakeOutputChanged)
        self.ui.intakeRunButton.connect("clicked(bool)", self.onIntakeRunButton)

    def _updateIntakeButton(self) -> None:
        path = self._currentPath()
        output = str(self.ui.intakeOutputPathLineEdit.currentPath or "").strip()
        key = str(self.ui.intakeKeyPathLineEdit.currentPath or "").strip()
        self.ui.intakeRunButton.enabled = (bool(path) and os.path.isdir(path) and bool(output) and bool(key)
                                           and os.path.isfile(key))

    def onIntakeOutputChanged(self, path: str) -> None:
        self._updateIntakeButton()

    def _intakeProgress(self, done: int, total: int) -> None:
        self.ui.intakeProgressBar.setMaximum(max(int(total), 1))
        self.ui.intakeProgressBar.setValue(int(done))
        slicer.app.processEvents()

    def onIntakeRunButton(self) -> None:
        path = self._currentPath()
        output = str(self.ui.intakeOutputPathLineEdit.currentPath or "").strip()
        key = str(self.ui.intakeKeyPathLineEdit.currentPath or "").strip()
        self.ui.intakeFindingsListWidget.clear()
        self.ui.intakeProgressBar.setValue(0)
        with slicer.util.tryWithErrorDisplay(_("Intake of {path} failed.").format(path=path), waitCursor=True):
            result = self.logic.intake(path, output, self.ui.intakeAdmissionProfileComboBox.currentText,
                                       self.ui.intakeDeidProfileComboBox.currentText, key,
                                       progress=self._intakeProgress)
            for line in self.logic.intakeLines(result):
                self.ui.intakeFindingsListWidget.addItem(line)
            if result["stopped_at"] == "admission":
                self.ui.intakeStatusLabel.text = _(
                    "Not admitted: {count} blocking finding(s); nothing was de-identified or loaded.").format(
                    count=result["admission"]["n_blocking"])
            elif result["stopped_at"] == "leak check":
                self.ui.intakeStatusLabel.text = _(
                    "The leak check found {count} leak(s) in the de-identified copy; nothing was loaded.").format(
                    count=result["leaks"]["n_leaks"])
            else:
                showVolumes(result["nodes"])
                self.ui.intakeStatusLabel.text = _(
                    "Admitted ({verdict}), de-identified ({files} files, no leak), loaded {count} volume(s)."
                ).format(verdict=result["admission"]["verdict"], files=result["deid"]["counts"]["written"],
                    count=len(result["nodes"]))

    def onStructuresInputChanged(self, _value: Any = None) -> None:
        self._updateButtons()

    def onImportStructuresButton(self) -> None:
        path = str(self.ui.structuresPathLineEdit.currentPath).strip()
        self.ui.structuresPathLineEdit.addCurrentPathToHistory()
        self.ui.structuresWarningsListWidget.clear()
        with slicer.util.tryWithErrorDisplay(_("Failed to import {path}.").format(path=path), waitCursor=True):
            node, lines = self.logic.importStructures(path, self.ui.structuresVolumeSelector.currentNode(),
                                                      self._templatePath())
            self._showStructureWarnings(lines)
            self.ui.exportSegmentationSelector.setCurrentNode(node)
            self.ui.statusLabel.text = _("Imported {count} segment(s) into {name}; {warnings} warning(s).").format(
                count=node.GetSegmentation().GetNumberOfSegments(), name=node.GetName(), warnings=len(lines))

    def onExportStructuresButton(self) -> None:
        path = str(self.ui.exportPathLineEdit.currentPath).strip()
        self.ui.exportPathLineEdit.addCurrentPathToHistory()
        self.ui.structuresWarningsListWidget.clear()
        with slicer.util.tryWithErrorDisplay(_("Failed to export to {path}.").format(path=path), waitCursor=True):
            lines = self.logic.exportStructures(
                self.ui.exportSegmentationSelector.currentNode(), self.ui.exportVolumeSelector.currentNode(), path,
                self.ui.exportFormatComboBox.currentText, str(self.ui.exportSeriesPathLineEdit.currentPath).strip(),
                self._templatePath())
            self._showStructureWarnings(lines)
            self.ui.statusLabel.text = _("Exported to {path}; {warnings} warning(s).").format(
                path=path, warnings=len(lines))

    # ------------------------------------------------------------------ helpers
    def _templatePath(self) -> str:
        return str(self.ui.templatePathLineEdit.currentPath or "").strip()

    def _showStructureWarnings(self, lines: Sequence[str]) -> None:
        self.ui.structuresWarningsListWidget.clear()
        for line in lines:
            self.ui.structuresWarningsListWidget.addItem(line)
        if not lines:
            self.ui.structuresWarningsListWidget.addItem(_("No warnings."))

    def _load(self, series: Optional[List[Tuple[str, int]]]) -> None:
        path = self._inspectedPath
        labelmap = bool(self._parameterNode.loadNiftiAsLabelmap) if self._parameterNode else False
        dialog = slicer.util.createProgressDialog(parent=slicer.util.mainWindow(), maximum=0,
                                                  labelText=_("Reading voxels..."), windowTitle=_("Load"))
        try:
            with slicer.util.tryWithErrorDisplay(_("Failed to load {path}.").format(path=path), waitCursor=True):
                try:
                    nodes = self.logic.load(path, series=series, labelmap=labelmap, progress=progressReporter(dialog))
                except OperationCancelled:
                    self.ui.statusLabel.text = _("Loading cancelled; volumes loaded before are kept.")
                    return
                dialog.close()
                showVolumes(nodes)
                names = ", ".join(node.GetName() for node in nodes)
                self.ui.statusLabel.text = _("Loaded {count} volume(s): {names}").format(count=len(nodes), names=names)
        finally:
            dialog.close()

    def _seriesLabel(self, entry: Mapping[str, Any]) -> str:
        label = entry.get("series_description") or (entry.get("series_uid") or "")[-12:] or "-"
        if int(entry.get("n_parts", 1)) > 1:
            label += " " + _("(part {part} of {count})").format(part=entry["part"], count=entry["n_parts"])
        return str(label)

    def _showInspection(self) -> None:
        import qt

        table = self.ui.seriesTableWidget
        table.setRowCount(len(self._inspected))
        for row, entry in enumerate(self._inspected):
            cells = [
                self._seriesLabel(entry),
                entry.get("modality") or "-",
                " x ".join(str(v) for v in entry["shape"]),
                " x ".join(f"{v:.4g}" for v in entry["spacing_mm"]),
                str(len(entry["problems"])),
            ]
            for column, text in enumerate(cells):
                item = qt.QTableWidgetItem(text)
                item.setToolTip(entry.get("series_uid") or entry.get("series_description") or "")
                table.setItem(row, column, item)
        table.resizeColumnsToContents()
        self._showProblems()
        n_problems = sum(len(e["problems"]) for e in self._inspected)
        self.ui.statusLabel.text = _("{count} series found, {problems} problem(s) reported.").format(
            count=len(self._inspected), problems=n_problems)

    def _showProblems(self) -> None:
        rows = self._selectedRows() or list(range(len(self._inspected)))
        self.ui.problemsListWidget.clear()
        for row in rows:
            entry = self._inspected[row]
            for problem in entry["problems"]:
                files = ", ".join(os.path.basename(f) for f in problem["files"][:3])
                more = f" +{len(problem['files']) - 3}" if len(problem["files"]) > 3 else ""
                where = f" ({files}{more})" if files else ""
                line = f"[{problem['severity']}] {problem['code']}: {problem['message']}{where}"
                self.ui.problemsListWidget.addItem(f"{self._seriesLabel(entry)}: {line}")


#
# RTSSBridgeLogic
#


class RTSSBridgeLogic(ScriptedLoadableModuleLogic):
    """Headless entry points of the module: inspect and load. Usable from other modules and the
    Python console; the scene defaults to ``slicer.mrmlScene``."""

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)

    def getParameterNode(self) -> Any:
        """The module's parameters, typed (RTSSBridgeParameterNode)."""
        return RTSSBridgeParameterNode(super().getParameterNode())  # type: ignore[call-arg]  # the decorator adds it

    def labelSet(self, templatePath: str = "") -> Any:
        """The label template of ``templatePath`` as the core's LabelSet (None without a path). The
        template reader is MultiModalAnnotation's, installed in ``RTSSBridgeLib.cliutil``."""
        if not templatePath:
            return None
        requireCore()
        from RTSSBridgeLib.cliutil import load_label_set

        return load_label_set(templatePath)

    def importStructures(self, path: str, volumeNode: Any, templatePath: str = "",
                         scene: Any = None) -> Tuple[Any, List[str]]:
        """Import an RT Structure Set, DICOM SEG or NIfTI labelmap onto ``volumeNode`` as a segmentation
        node (point ROIs as point lists). Returns the node and every warning as one line each."""
        requireCore()
        from RTSSBridgeLib.mrml.segmentations import import_file_to_scene, problem_lines

        node, _points, result = import_file_to_scene(scene if scene is not None else slicer.mrmlScene, path,
                                                     volumeNode, self.labelSet(templatePath))
        lines = problem_lines(result)
        for line in lines:
            logging.warning(f"{os.path.basename(path)}: {line}")
        return node, lines

    def exportStructures(self, segmentationNode: Any, volumeNode: Any, outputPath: str, exportFormat: str = "RTSS",
                         seriesFolder: str = "", templatePath: str = "") -> List[str]:
        """Export ``segmentationNode`` on ``volumeNode``'s grid as ``exportFormat`` (RTSS and SEG
        reference the DICOM series in ``seriesFolder``). Returns every warning as one line each."""
        requireCore()
        from RTSSBridgeLib.mrml.segmentations import export_segmentation, problem_lines

        if exportFormat not in EXPORT_FORMATS:
            raise ValueError(f"export format {exportFormat!r} is not one of {list(EXPORT_FORMATS)}")
        result = export_segmentation(segmentationNode, volumeNode, outputPath, exportFormat, seriesFolder,
                                     self.labelSet(templatePath))
        lines = problem_lines(result)
        for line in lines:
            logging.warning(f"{os.path.basename(outputPath)}: {line}")
        return lines

    def isNifti(self, path: str) -> bool:
        """True for an existing ``.nii`` / ``.nii.gz`` file."""
        requireCore()
        from RTSSBridgeLib.nifti import is_nifti_path

        return os.path.isfile(path) and is_nifti_path(path)

    def inspect(self, path: str, progress: Optional[ProgressCallback] = None) -> List[Dict[str, Any]]:
        """One entry per series (or per NIfTI file), as ``mmanno inspect --headers-only --json``
        prints it: UIDs, modality, shape, spacing, origin, direction and problems. Raises the
        core's ``InputError`` when nothing can be loaded."""
        requireCore()
        from RTSSBridgeLib.cli import inspect_path

        return inspect_path(str(path), read_voxels=False, progress=progress)

    def load(self, path: str, series: Optional[Sequence[Tuple[str, int]]] = None, labelmap: bool = False,
             progress: Optional[ProgressCallback] = None, scene: Any = None) -> List[Any]:
        """Load a NIfTI file (one node) or the DICOM series of a folder (one node per series)."""
        if self.isNifti(path):
            return [self.loadNifti(path, labelmap=labelmap, scene=scene)]
        return self.loadDicom(path, series=series, progress=progress, scene=scene)

    def loadNifti(self, path: str, labelmap: bool = False, scene: Any = None) -> Any:
        """A scalar volume node (or a labelmap volume node) for a NIfTI file."""
        requireCore()
        from RTSSBridgeLib.mrml.volumes import volume_node_from_nifti
        from RTSSBridgeLib.nifti import read_nifti

        image = read_nifti(path)
        for problem in image.problems:
            logging.warning(f"{path}: {problem.code.value}: {problem.message}")
        return volume_node_from_nifti(scene if scene is not None else slicer.mrmlScene, image, label_map=labelmap)

    def loadDicom(self, path: str, series: Optional[Sequence[Tuple[str, int]]] = None,
                  progress: Optional[ProgressCallback] = None, scene: Any = None) -> List[Any]:
        """Volume nodes for the series of a DICOM folder.

        ``series`` lists ``(SeriesInstanceUID, part)`` pairs as :meth:`inspect` reports them;
        ``None`` loads every series that can be decoded (the others are logged and skipped).
        Raises ``ValueError`` when a requested series is no longer in the folder or nothing
        can be loaded.
        """
        requireCore()
        from RTSSBridgeLib.dicom_series import read_volume, scan_dicom
        from RTSSBridgeLib.mrml.volumes import volume_node_from_dicom
        from RTSSBridgeLib.problems import ProblemCode

        target = scene if scene is not None else slicer.mrmlScene
        scan = scan_dicom(path)
        if series is None:
            chosen = [s for s in scan.series
                      if not any(p.code == ProblemCode.UNDECODABLE_TRANSFER_SYNTAX for p in s.problems)]
            for skipped in scan.series:
                if skipped not in chosen:
                    logging.warning(f"{path}: series {skipped.series_uid} part {skipped.part} skipped: "
                                    "its transfer syntax cannot be decoded here")
        else:
            by_key = {(s.series_uid, s.part): s for s in scan.series}
            wanted = [(str(uid), int(part)) for uid, part in series]
            gone = [key for key in wanted if key not in by_key]
            if gone:
                raise ValueError(f"{path}: series {gone} not found any more; inspect the folder again")
            chosen = [by_key[key] for key in wanted]
        if not chosen:
            raise ValueError(f"{path}: no loadable image series among {scan.n_files} file(s)")
        total = sum(len(s.frames) for s in chosen)
        nodes = []
        done = 0
        for s in chosen:

            def step(k: int, _n: int, base: int = done) -> None:
                if progress is not None:
                    progress(base + k, total)

            nodes.append(volume_node_from_dicom(target, read_volume(s, step)))
            done += len(s.frames)
        return nodes

    def admissionProfiles(self) -> List[str]:
        """Names of the built-in admission profiles (``mmanno check --profile``)."""
        requireCore()
        from RTSSBridgeLib.admission.model import builtin_admission_profiles

        return builtin_admission_profiles()

    def deidProfiles(self) -> List[str]:
        """Names of the built-in de-identification profiles (``mmanno deid --profile``)."""
        requireCore()
        from RTSSBridgeLib.deid.profile import builtin_profiles

        return builtin_profiles()

    def intake(self, path: str, outputFolder: str, admissionProfile: str = "generic", deidProfile: str = "basic",
               keyFile: str = "", progress: Optional[ProgressCallback] = None, scene: Any = None) -> Dict[str, Any]:
        """Check -> de-identify -> verify -> load a received folder (R-6.3, R-6.4, R-7.3).

        1. admission check of ``path`` with ``admissionProfile`` (rejected files are copied to
           ``outputFolder + ".quarantine"``); a blocking finding stops here;
        2. de-identification into the new folder ``outputFolder`` with ``deidProfile`` and the key
           in ``keyFile`` (registry and operations log in ``outputFolder + ".private"``);
        3. leak check of the output against ``path``; a leak stops here;
        4. every de-identified series is loaded into the scene.

        Returns ``{"admission", "deid", "leaks", "nodes", "stopped_at"}`` (``stopped_at`` is None,
        "admission" or "leak check"). Raises the core's ``InputError`` on bad input.
        """
        requireCore()
        from RTSSBridgeLib.admission.check import run_check
        from RTSSBridgeLib.deid.batch import deidentify_folder
        from RTSSBridgeLib.deid.verify import verify_output

        steps = ((0, 250), (250, 700), (700, 850), (850, 1000))  # share of the bar for each step

        def part(index: int) -> ProgressCallback:
            low, high = steps[index]

            def report(done: int, total: int) -> None:
                if progress is not None:
                    progress(low + (high - low) * int(done) // max(int(total), 1), 1000)

            return report

        result: Dict[str, Any] = {"admission": None, "deid": None, "leaks": None, "nodes": [], "stopped_at": None}
        quarantine = os.path.abspath(outputFolder).rstrip(os.sep) + ".quarantine"
        admission = run_check(path, admissionProfile, quarantine=quarantine, progress=part(0))
        result["admission"] = admission
        if admission["verdict"] == "rejected":
            result["stopped_at"] = "admission"
            return result
        result["deid"] = deidentify_folder(path, outputFolder, deidProfile, keyFile, progress=part(1))
        leaks = verify_output(outputFolder, path, progress=part(2))
        result["leaks"] = leaks
        if not leaks["passed"]:
            result["stopped_at"] = "leak check"
            return result
        result["nodes"] = self.loadDicom(outputFolder, progress=part(3), scene=scene)
        if progress is not None:
            progress(1000, 1000)
        return result

    def intakeLines(self, result: Mapping[str, Any]) -> List[str]:
        """One line per admission finding, quarantined file and leak of an :meth:`intake` result
        (no patient values: codes, rules, files)."""
        lines = []
        admission = result.get("admission") or {}
        for case in admission.get("cases", []):
            for f in case["findings"]:
                mark = _("BLOCKING") if f["blocking"] else f["severity"]
                lines.append(f"{case['case']}: [{mark}] {f['code']}: {f['message']} ({f['clause']}: {f['rule_title']})")
        for f in admission.get("batch_findings", []):
            lines.append(f"[{f['severity']}] {f['code']}: {f['message']} ({f['clause']}: {f['rule_title']})")
        for q in admission.get("quarantine", {}).get("files", []):
            lines.append(_("quarantined {file}: {code}").format(file=q["file"], code=q["code"]))
        leaks = result.get("leaks") or {}
        for leak in leaks.get("leaks", []):
            lines.append(_("LEAK {category}: {file} {tag}").format(category=leak["category"], file=leak["file"],
                                                                   tag=leak["tag_path"]))
        return lines


#
# RTSSBridgeTest
#


class RTSSBridgeTest(ScriptedLoadableModuleTest):
    """Runs the scenarios of ``RTSSBridgeLib.mrml.scenarios`` and ``.structure_scenarios`` (the same
    functions pytest runs) and the Logic's inspect/load, intake and structure import/export paths."""

    def setUp(self) -> None:
        slicer.mrmlScene.Clear()

    def runTest(self) -> None:
        self.setUp()
        self.test_RTSSBridgeScenarios()
        self.setUp()
        self.test_RTSSBridgeLogicInspectAndLoad()
        self.setUp()
        self.test_RTSSBridgeIntake()
        self.setUp()
        self.test_RTSSBridgeStructureScenarios()
        self.setUp()
        self.test_RTSSBridgeLogicStructures()

    def test_RTSSBridgeStructureScenarios(self) -> None:
        requireCore()
        from RTSSBridgeLib.mrml.structure_scenarios import structure_scenarios

        runScenarios(self, structure_scenarios())
        self.delayDisplay("Structure scenarios passed")

    def test_RTSSBridgeLogicStructures(self) -> None:
        """The panel's import and export path: RTSS file -> segmentation -> RTSS, SEG and NIfTI files."""
        requireCore()
        from pathlib import Path

        from RTSSBridgeLib.dicom_series import scan_dicom
        from RTSSBridgeLib.mrml.structure_scenarios import write_case
        from RTSSBridgeLib.rtss_export import export_rtss
        from RTSSBridgeLib.structures import ReferenceGrid

        logic = RTSSBridgeLogic()
        workdir = tempfile.mkdtemp(prefix="mmanno-rtssbridge-structures-")
        try:
            folder, _geometry, rois = write_case(Path(workdir))
            export_rtss(rois, ReferenceGrid.from_series(scan_dicom(folder).series[0]), Path(workdir) / "in.dcm")
            (volume,) = logic.load(str(folder))
            node, lines = logic.importStructures(str(Path(workdir) / "in.dcm"), volume)
            self.assertEqual(lines, [])
            self.assertEqual(node.GetSegmentation().GetNumberOfSegments(), len(rois))
            for kind, name in (("RTSS", "out.dcm"), ("SEG", "seg.dcm"), ("NIfTI", "labels.nii.gz")):
                lines = logic.exportStructures(node, volume, str(Path(workdir) / name), kind, str(folder))
                self.assertTrue(os.path.isfile(os.path.join(workdir, name)), kind)
            back, lines = logic.importStructures(str(Path(workdir) / "out.dcm"), volume)
            self.assertEqual(back.GetSegmentation().GetNumberOfSegments(), len(rois))
            with self.assertRaises(ValueError):
                logic.exportStructures(node, volume, str(Path(workdir) / "x.dcm"), "STL", str(folder))
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        self.delayDisplay("Logic structure import and export passed")

    def test_RTSSBridgeScenarios(self) -> None:
        requireCore()
        from RTSSBridgeLib.mrml.scenarios import scenarios

        runScenarios(self, scenarios())
        self.delayDisplay("Scenarios passed")

    def test_RTSSBridgeLogicInspectAndLoad(self) -> None:
        requireCore()
        from pathlib import Path

        from RTSSBridgeLib.mrml.scenarios import write_oblique_ct_series, write_oblique_nifti

        logic = RTSSBridgeLogic()
        workdir = tempfile.mkdtemp(prefix="mmanno-rtssbridge-logic-")
        try:
            written = write_oblique_ct_series(Path(workdir) / "ct")
            folder = str(written["folder"])
            entries = logic.inspect(folder)
            self.assertEqual(len(entries), 1)
            self.assertEqual(entries[0]["modality"], "CT")
            self.assertEqual(entries[0]["shape"], [7, 5, 4])
            self.assertEqual(entries[0]["series_uid"], written["series_uid"])
            key = (entries[0]["series_uid"], entries[0]["part"])
            nodes = logic.load(folder, series=[key])
            self.assertEqual(len(nodes), 1)
            self.assertEqual(slicer.mrmlScene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode"), 1)
            with self.assertRaises(ValueError):
                logic.load(folder, series=[("1.2.3.4", 1)])

            nifti = write_oblique_nifti(Path(workdir) / "nifti" / "labels.nii.gz")
            entries = logic.inspect(str(nifti["path"]))
            self.assertEqual(entries[0]["shape"], [6, 5, 4])
            (label,) = logic.load(str(nifti["path"]), labelmap=True)
            self.assertTrue(label.IsA("vtkMRMLLabelMapVolumeNode"))
            (image,) = logic.load(str(nifti["path"]), labelmap=False)
            self.assertFalse(image.IsA("vtkMRMLLabelMapVolumeNode"))
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        self.delayDisplay("Logic inspect and load passed")

    def test_RTSSBridgeIntake(self) -> None:
        """Check -> de-identify -> verify -> load on a generated ultrasound case: admitted, no leak,
        one volume loaded; a polyglot file in the folder stops the intake before de-identification."""
        requireCore()
        from pathlib import Path

        from RTSSBridgeLib.deid.keys import generate_key_file
        from RTSSBridgeLib.samples import write_sample

        logic = RTSSBridgeLogic()
        workdir = tempfile.mkdtemp(prefix="mmanno-rtssbridge-intake-")
        try:
            case = write_sample("us-thyroid", Path(workdir) / "case")
            key = os.path.join(workdir, "keys", "intake.key")
            generate_key_file(key)
            steps: List[int] = []
            result = logic.intake(str(case.root), os.path.join(workdir, "out"), "generic", "basic", key,
                                  progress=lambda done, total: steps.append(done))
            self.assertIsNone(result["stopped_at"])
            self.assertEqual(result["leaks"]["n_leaks"], 0)
            self.assertEqual(len(result["nodes"]), 1)
            self.assertEqual(steps[-1], 1000)
            self.assertEqual(steps, sorted(steps))
            first = sorted(Path(case.root, "dicom").rglob("*.dcm"))[0].read_bytes()
            Path(case.root, "dicom", "evil.dcm").write_bytes(b"MZ" + first[2:])
            result = logic.intake(str(case.root), os.path.join(workdir, "out2"), "generic", "basic", key)
            self.assertEqual(result["stopped_at"], "admission")
            self.assertFalse(os.path.exists(os.path.join(workdir, "out2")))
            self.assertTrue(any("POLYGLOT_PREAMBLE" in line for line in logic.intakeLines(result)))
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        self.delayDisplay("Intake check -> de-identify -> load passed")
