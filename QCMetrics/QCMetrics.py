"""QCMetrics: quality-control measures of annotations (R-9, R-10, Appendix D).

Thin Slicer layer over ``QCMetricsLib``. The panel compares two segmentations (reference and test:
two annotators, two versions, or an AI proposal and its human correction), shows every label's
metrics in a table with the labels below the Dice threshold flagged for special review (R-10.2),
keeps the result as a table node, and opens the self-contained HTML QC report. It also shows the
voxel grid of a volume (shape, spacing, LPS origin, direction, axis codes, obliqueness) through
RTSSBridge's geometry adapter: the first thing a QC reviewer checks before comparing annotations.

Valid Python 3.9; annotations are evaluated at run time by ``parameterNodeWrapper``.
"""

import os
import tempfile
from typing import Annotated, Any, Dict, List, Optional, Sequence, Tuple

import slicer
import vtk
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode, vtkMRMLTableNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

HOMEPAGE = "https://github.com/mmanno/SlicerMultiModalAnnotation"


def _requireCore() -> None:
    """Install missing runtime packages (RTSSBridge owns the check) before any ``*Lib`` import."""
    from RTSSBridge import requireCore

    requireCore("QCMetrics")


def _formatNumbers(values: Sequence[float], digits: int = 6) -> str:
    return ", ".join(f"{float(v):.{digits}g}" for v in values)


#
# QCMetrics
#


class QCMetrics(ScriptedLoadableModule):
    """Module description for the module selector and the help panel."""

    def __init__(self, parent: Any) -> None:
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("QC Metrics")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "MultiModalAnnotation")]
        self.parent.dependencies = ["RTSSBridge"]
        self.parent.contributors = ["MultiModalAnnotation developers"]
        self.parent.helpText = _(
            "Quality control of annotations. Compares a reference and a test segmentation label by label "
            "(Dice, IoU, conformity, Hausdorff distance and its 95th percentile, surface distances, volumes, "
            "detection of lesions), flags labels below the Dice threshold for special review, gives the verdict "
            "and writes the QC report. Shows the voxel grid of a volume in DICOM patient coordinates (LPS). "
            'See the <a href="{homepage}#qcmetrics">module documentation</a>.'
        ).format(homepage=HOMEPAGE)
        self.parent.acknowledgementText = _("Part of the MultiModalAnnotation extension.")


#
# QCMetricsParameterNode
#


@parameterNodeWrapper
class QCMetricsParameterNode:
    """
    inputVolume - the volume whose geometry is shown.
    referenceSegmentation - the reference annotation (first reader, earlier version, or the human-corrected result).
    testSegmentation - the annotation checked against it.
    diceThreshold - labels with a Dice below it go to special review (R-10.2, default 0.75).
    resultsTable - the table node of the last comparison.
    """

    inputVolume: vtkMRMLScalarVolumeNode
    referenceSegmentation: vtkMRMLSegmentationNode
    testSegmentation: vtkMRMLSegmentationNode
    diceThreshold: Annotated[float, WithinRange(0.0, 1.0)] = 0.75
    resultsTable: vtkMRMLTableNode


#
# QCMetricsWidget
#


class QCMetricsWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Geometry read-out of the selected volume, refreshed when the volume changes."""

    def __init__(self, parent: Any = None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic: Any = None  # QCMetricsLogic once set up; the contract tests check its use
        self._parameterNode: Any = None  # a QCMetricsParameterNode while the widget is shown
        self._parameterNodeGuiTag: Any = None
        self._observedVolume: Any = None
        self._reportPath: Optional[str] = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/QCMetrics.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)

        self.logic = QCMetricsLogic()

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.volumeSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.onVolumeChanged)
        self.ui.referenceSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.updateCompareButton)
        self.ui.testSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.updateCompareButton)
        self.ui.compareButton.connect("clicked(bool)", self.onCompareButton)
        self.ui.openReportButton.connect("clicked(bool)", self.onOpenReportButton)

        self.initializeParameterNode()
        with slicer.util.tryWithErrorDisplay(_("Failed to install the Python packages of MultiModalAnnotation.")):
            _requireCore()
        self.updateGeometry()
        self.updateCompareButton()

    def cleanup(self) -> None:
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()
        self.updateGeometry()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
        self._observeVolume(None)

    def onSceneStartClose(self, caller: Any, event: Any) -> None:
        self._observeVolume(None)
        self.setParameterNode(None)

    def onSceneEndClose(self, caller: Any, event: Any) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        if self.logic is None:
            return
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            firstVolume = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if firstVolume:
                self._parameterNode.inputVolume = firstVolume

    def setParameterNode(self, inputParameterNode: Any) -> None:
        """Bind the GUI to a QCMetricsParameterNode (or to nothing, with None)."""
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)

    # ------------------------------------------------------------------ slots
    def onVolumeChanged(self, node: Any) -> None:
        self._observeVolume(node)
        self.updateGeometry()

    def onVolumeModified(self, caller: Any, event: Any) -> None:
        self.updateGeometry()

    def updateCompareButton(self, node: Any = None) -> None:
        ready = self.ui.referenceSelector.currentNode() is not None and self.ui.testSelector.currentNode() is not None
        self.ui.compareButton.enabled = ready
        self.ui.openReportButton.enabled = bool(self._reportPath)

    def onCompareButton(self, checked: bool = False) -> None:
        with slicer.util.tryWithErrorDisplay(_("Failed to compare the segmentations."), waitCursor=True):
            threshold = float(self._parameterNode.diceThreshold) if self._parameterNode else 0.75
            outcome = self.logic.compareSegmentations(self.ui.referenceSelector.currentNode(),
                                                      self.ui.testSelector.currentNode(), threshold)
            self._reportPath = outcome["report"]
            if self._parameterNode:
                self._parameterNode.resultsTable = outcome["table"]
            self.showResults(outcome["result"])
        self.updateCompareButton()

    def onOpenReportButton(self, checked: bool = False) -> None:
        import qt

        if self._reportPath:
            qt.QDesktopServices.openUrl(qt.QUrl.fromLocalFile(self._reportPath))

    def showResults(self, result: Dict[str, Any]) -> None:
        """Fill the results table: one row per label, flagged rows tinted."""
        import qt

        _requireCore()
        from QCMetricsLib.metrics import metric

        names = ["dice", "hausdorff95_mm", "mean_surface_distance_mm", "nsd", "volume_ref_ml", "volume_test_ml"]
        headers = [_("Label")]
        for name in names:
            m = metric(name)
            headers.append(f"{m.title} ({m.unit})" if m.unit else m.title)
        headers.append(_("Special review"))
        table = self.ui.resultsTableWidget
        table.setRowCount(0)
        table.setColumnCount(len(headers))
        table.setHorizontalHeaderLabels(headers)
        table.setRowCount(len(result["labels"]))
        for row, entry in enumerate(result["labels"]):
            cells = [entry["label"]]
            cells += ["—" if entry[name] is None else f"{entry[name]:.4g}" for name in names]
            cells.append("; ".join(entry["review_reasons"]) if entry["special_review"] else _("no"))
            for column, text in enumerate(cells):
                item = qt.QTableWidgetItem(text)
                if entry["special_review"]:
                    item.setBackground(qt.QColor(255, 222, 214))
                table.setItem(row, column, item)
        table.resizeColumnsToContents()
        verdict = result["verdict"]
        self.ui.compareStatusLabel.text = _("Verdict: {verdict}. {reasons}").format(
            verdict=verdict["title"], reasons=" ".join(verdict["reasons"][:3]))

    # ------------------------------------------------------------------ helpers
    def _observeVolume(self, node: Any) -> None:
        if self._observedVolume is not None:
            self.removeObserver(self._observedVolume, vtk.vtkCommand.ModifiedEvent, self.onVolumeModified)
            self.removeObserver(self._observedVolume, slicer.vtkMRMLVolumeNode.ImageDataModifiedEvent,
                                self.onVolumeModified)
        self._observedVolume = node
        if node is not None:
            self.addObserver(node, vtk.vtkCommand.ModifiedEvent, self.onVolumeModified)
            self.addObserver(node, slicer.vtkMRMLVolumeNode.ImageDataModifiedEvent, self.onVolumeModified)

    def _rows(self, geometry: Dict[str, Any]) -> List[Tuple[str, str]]:
        shape = " x ".join(str(v) for v in geometry["shape"])
        direction = "; ".join("[" + _formatNumbers(row) + "]" for row in geometry["direction"])
        return [
            (_("Shape (i, j, k)"), shape),
            (_("Spacing (mm)"), _formatNumbers(geometry["spacing_mm"])),
            (_("Origin (LPS, mm)"), _formatNumbers(geometry["origin_lps"])),
            (_("Direction (rows, LPS)"), direction),
            (_("Axis codes"), geometry["axis_codes"]),
            (_("Oblique"), _("yes") if geometry["oblique"] else _("no")),
            (_("Voxel volume (mm3)"), _formatNumbers([geometry["voxel_volume_mm3"]])),
            (_("Node class"), geometry["node_class"]),
        ]

    def updateGeometry(self) -> None:
        import qt

        table = self.ui.geometryTableWidget
        # The combo box, not the parameter node: this slot may run before the parameter node's own.
        node = self.ui.volumeSelector.currentNode()
        table.setRowCount(0)
        if node is None or self.logic is None:
            self.ui.geometryStatusLabel.text = _("Select a volume to see its voxel grid.")
            return
        with slicer.util.tryWithErrorDisplay(_("Failed to read the geometry of the volume.")):
            try:
                geometry = self.logic.describeGeometry(node)
            except ValueError as exc:
                self.ui.geometryStatusLabel.text = str(exc)
                return
            rows = self._rows(geometry)
            table.setRowCount(len(rows))
            for row, (name, value) in enumerate(rows):
                table.setItem(row, 0, qt.QTableWidgetItem(name))
                table.setItem(row, 1, qt.QTableWidgetItem(value))
            table.resizeColumnsToContents()
            notes = []
            if geometry["oblique"]:
                notes.append(_("The grid is oblique: its axes are not aligned with the patient axes; annotations "
                               "exported per slice follow the grid, not the patient axes."))
            if geometry["parent_transform"]:
                notes.append(_("The volume is under the transform {name}; the grid shown is before that "
                               "transform.").format(name=geometry["parent_transform"]))
            self.ui.geometryStatusLabel.text = " ".join(notes)


#
# QCMetricsLogic
#


class QCMetricsLogic(ScriptedLoadableModuleLogic):
    """Headless entry points of the module (usable from the Python console and other modules)."""

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)

    def getParameterNode(self) -> Any:
        """The module's parameters, typed (QCMetricsParameterNode)."""
        return QCMetricsParameterNode(super().getParameterNode())  # type: ignore[call-arg]  # the decorator adds it

    def describeGeometry(self, volumeNode: Any) -> Dict[str, Any]:
        """The voxel grid of a volume node in LPS (Appendix C ``image`` fields) plus axis codes,
        obliqueness, voxel volume, node class and the name of its parent transform (or None).
        Raises ``ValueError`` when the node has no image data."""
        if volumeNode is None:
            raise ValueError("no volume node given")
        _requireCore()
        from RTSSBridgeLib.mrml.volumes import geometry_from_volume_node

        geometry = geometry_from_volume_node(volumeNode)
        parent = volumeNode.GetParentTransformNode()
        described = geometry.to_dict()
        described.update({
            "axis_codes": geometry.axis_codes(),
            "oblique": geometry.is_oblique(),
            "voxel_volume_mm3": geometry.voxel_volume_mm3,
            "node_class": volumeNode.GetClassName(),
            "parent_transform": parent.GetName() if parent is not None else None,
        })
        return described

    def compareSegmentations(self, referenceNode: Any, testNode: Any, diceThreshold: float = 0.75,
                             outputFolder: Optional[str] = None) -> Dict[str, Any]:
        """Compare two segmentation (or labelmap volume) nodes label by label, write the QC report
        (report.html, qc.json, qc.csv in ``outputFolder``, a new temporary folder by default) and
        put the metrics in a table node. Returns ``result`` (the qc-case JSON), ``table``,
        ``report``, ``json`` and ``csv``. Raises ``ValueError`` for unusable inputs."""
        if referenceNode is None or testNode is None:
            raise ValueError("select a reference and a test segmentation")
        _requireCore()
        from QCMetricsLib.compare import compare_volumes
        from QCMetricsLib.config import QCConfig
        from QCMetricsLib.mrml.segmentations import labeled_volume_from_node
        from QCMetricsLib.mrml.tables import table_node_from_result
        from QCMetricsLib.report import write_case_outputs

        reference = labeled_volume_from_node(referenceNode)
        test = labeled_volume_from_node(testNode)
        config = QCConfig(dice_threshold=float(diceThreshold))
        comparison = compare_volumes(reference, test, config, case_id=testNode.GetName())
        folder = outputFolder or tempfile.mkdtemp(prefix="QCMetrics-")
        paths = {key: os.path.join(folder, name) for key, name in
                 (("json", "qc.json"), ("report", "report.html"), ("csv", "qc.csv"))}
        write_case_outputs(comparison, paths["json"], paths["report"], paths["csv"])
        table = table_node_from_result(slicer.mrmlScene, comparison.result,
                                       name=f"QC {referenceNode.GetName()} vs {testNode.GetName()}")
        return {"result": comparison.result, "table": table, **paths}


#
# QCMetricsTest
#


class QCMetricsTest(ScriptedLoadableModuleTest):
    """Runs the scenarios of ``QCMetricsLib.mrml.scenarios`` (the same functions pytest runs) and
    the Logic's geometry read-out."""

    def setUp(self) -> None:
        slicer.mrmlScene.Clear()

    def runTest(self) -> None:
        self.setUp()
        self.test_QCMetricsScenarios()
        self.setUp()
        self.test_QCMetricsDescribeGeometry()
        self.setUp()
        self.test_QCMetricsCompareSegmentations()

    def test_QCMetricsCompareSegmentations(self) -> None:
        _requireCore()
        import numpy as np

        from QCMetricsLib.mrml.segmentations import segmentation_node_from_labelmap
        from RTSSBridgeLib.geometry import ImageGeometry

        geometry = ImageGeometry((30, 24, 12), (0.8, 0.8, 2.0), (5.0, -10.0, 20.0))
        reference = np.zeros(geometry.array_shape, dtype=np.uint8)
        reference[2:10, 4:20, 5:25] = 1
        reference[4:6, 8:11, 8:11] = 2
        test = np.roll(reference, 1, axis=2)
        test[test == 2] = 1  # the lesion is missed
        names = {1: "liver", 2: "lesion"}
        referenceNode = segmentation_node_from_labelmap(slicer.mrmlScene, reference, geometry, names, "reader A")
        testNode = segmentation_node_from_labelmap(slicer.mrmlScene, test, geometry, {1: "liver"}, "reader B")
        folder = tempfile.mkdtemp(prefix="QCMetricsTest-")
        outcome = QCMetricsLogic().compareSegmentations(referenceNode, testNode, 0.8, folder)
        self.assertTrue(os.path.isfile(outcome["report"]))
        self.assertEqual(outcome["result"]["verdict"]["status"], "rework")
        rows = {e["label"]: e for e in outcome["result"]["labels"]}
        self.assertTrue(rows["lesion"]["special_review"])
        self.assertFalse(rows["liver"]["special_review"])
        self.assertEqual(outcome["table"].GetTable().GetNumberOfRows(), 2)
        with self.assertRaises(ValueError):
            QCMetricsLogic().compareSegmentations(None, testNode)
        self.delayDisplay("Segmentation comparison passed")

    def test_QCMetricsScenarios(self) -> None:
        _requireCore()
        from QCMetricsLib.mrml.scenarios import scenarios
        from RTSSBridge import runScenarios

        runScenarios(self, scenarios())
        self.delayDisplay("Scenarios passed")

    def test_QCMetricsDescribeGeometry(self) -> None:
        _requireCore()
        import numpy as np

        from RTSSBridgeLib.geometry import ImageGeometry
        from RTSSBridgeLib.mrml.volumes import volume_node_from_array

        c, s = np.cos(np.radians(20.0)), np.sin(np.radians(20.0))
        direction = ((c, -s, 0.0), (s, c, 0.0), (0.0, 0.0, 1.0))
        geometry = ImageGeometry((4, 3, 2), (0.5, 0.8, 2.0), (10.0, -20.0, 30.0), direction)
        node = volume_node_from_array(slicer.mrmlScene, np.zeros(geometry.array_shape, dtype=np.int16),
                                      geometry, "QC geometry test")
        described = QCMetricsLogic().describeGeometry(node)
        self.assertEqual(described["shape"], [4, 3, 2])
        np.testing.assert_allclose(described["spacing_mm"], [0.5, 0.8, 2.0], atol=1e-9)
        np.testing.assert_allclose(described["origin_lps"], [10.0, -20.0, 30.0], atol=1e-9)
        np.testing.assert_allclose(described["direction"], direction, atol=1e-9)
        self.assertEqual(described["axis_codes"], "LPS")
        self.assertTrue(described["oblique"])
        self.assertAlmostEqual(described["voxel_volume_mm3"], 0.5 * 0.8 * 2.0)
        self.assertIsNone(described["parent_transform"])

        transform = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "shift")
        node.SetAndObserveTransformNodeID(transform.GetID())
        self.assertEqual(QCMetricsLogic().describeGeometry(node)["parent_transform"], "shift")

        empty = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "empty")
        with self.assertRaises(ValueError):
            QCMetricsLogic().describeGeometry(empty)
        self.delayDisplay("Geometry read-out passed")
