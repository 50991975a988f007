"""Contract tests of the Slicer layer (ARCHITECTURE.md "Testing").

The module files (``<Module>/<Module>.py``), their ``.ui`` panels and the extension's build files
can only run inside the Slicer application, which these machines do not have. What can be
checked without it is checked here:

* static contracts (no slicer needed): the ``.ui`` files are valid Qt Designer files; every
  ``self.ui.<name>`` exists in the panel, is used only through attributes its widget class has,
  and is connected only to signals it emits and to slots that exist; every ``self.logic.<m>``
  call matches a Logic method's signature; parameter-node fields match the ``.ui`` bindings;
  user-visible text goes through ``_()``; core files import no slicer/qt/ctk/vtk; scene adapters
  stay headless; modules use each other only in ARCHITECTURE.md's direction and declare it;
  Python 3.9 syntax; class names; CMake lists every file; icons; the catalog entry; the
  runtime requirements;
* run-time contracts (``slicer`` marker): the module files import with stand-ins for the
  GUI-only modules (``Testing/slicer_gui_stubs.py``), their classes are defined, the Module
  descriptions are translated, the parameter nodes take their defaults, the first-use
  dependency check works, and each module's own ``Test.runTest`` passes against a real scene;
* the build: with a stand-in Slicer CMake package, the extension configures and installs, and
  the installed modules find the shared resources.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import json
import logging
import os
import re
import shutil
import string
import struct
import subprocess
import sys
import types
import xml.etree.ElementTree as ET
import zlib
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Set, Tuple

import pytest

REPO = Path(__file__).resolve().parents[1]
MODULES = ("RTSSBridge", "QCMetrics", "MultiModalAnnotation")  # dependencies first
#: ARCHITECTURE.md: MultiModalAnnotation may use RTSSBridge and QCMetrics; QCMetrics' case readers
#: use RTSSBridge; RTSSBridge and QCMetrics never use MultiModalAnnotation.
EXPECTED_DEPENDENCIES: Dict[str, List[str]] = {
    "RTSSBridge": [],
    "QCMetrics": ["RTSSBridge"],
    "MultiModalAnnotation": ["RTSSBridge", "QCMetrics"],
}
CATEGORY = "MultiModalAnnotation"
HOMEPAGE = "https://github.com/mmanno/SlicerMultiModalAnnotation"
RAW_BASE = "https://raw.githubusercontent.com/mmanno/SlicerMultiModalAnnotation/main/"
CORE_FORBIDDEN = ("slicer", "qt", "ctk", "vtk", "vtkmodules", "PythonQt", "MRMLCorePython", "MRMLLogicPython")
ADAPTER_FORBIDDEN = ("qt", "ctk", "PythonQt")
ADAPTER_FORBIDDEN_SLICER_ATTRIBUTES = ("app", "util", "modules", "mrmlScene")

# Widgets and layouts Qt Designer knows without a <customwidget> declaration.
QT_WIDGETS = {
    "QWidget", "QLabel", "QPushButton", "QToolButton", "QCheckBox", "QRadioButton", "QComboBox", "QSpinBox",
    "QDoubleSpinBox", "QLineEdit", "QTextEdit", "QPlainTextEdit", "QTableWidget", "QListWidget", "QTreeWidget",
    "QGroupBox", "QFrame", "QSlider", "QProgressBar", "QTabWidget", "QStackedWidget", "QScrollArea", "QSplitter",
}
QT_LAYOUTS = {"QVBoxLayout", "QHBoxLayout", "QFormLayout", "QGridLayout"}
# Attributes the module files may use on a widget of each class (Qt/CTK/MRML widget API as exposed by
# PythonQt). A new use must be checked against the class documentation and added here.
_COMMON_API = {"enabled", "visible", "toolTip", "connect", "setEnabled", "setVisible", "setToolTip", "show", "hide",
               "objectName"}
WIDGET_API: Dict[str, Set[str]] = {
    "QPushButton": _COMMON_API | {"text", "setText", "checked", "setChecked", "click"},
    "QToolButton": _COMMON_API | {"text", "setText", "checked", "setChecked", "click"},
    "QCheckBox": _COMMON_API | {"text", "checked", "setChecked"},
    "QLabel": _COMMON_API | {"text", "setText", "clear"},
    "QComboBox": _COMMON_API | {"currentText", "currentIndex", "setCurrentIndex", "addItem", "addItems", "clear",
                                "count", "findText"},
    "QSpinBox": _COMMON_API | {"value", "setValue", "minimum", "maximum"},
    "QTableWidget": _COMMON_API | {"setRowCount", "rowCount", "setColumnCount", "setItem", "item", "clearContents",
                                   "resizeColumnsToContents", "selectionModel", "setHorizontalHeaderLabels",
                                   "selectRow", "clearSelection"},
    "QListWidget": _COMMON_API | {"clear", "addItem", "addItems", "count", "item"},
    "QProgressBar": _COMMON_API | {"value", "setValue", "maximum", "setMaximum", "minimum", "setMinimum",
                                   "setRange", "reset", "format", "setFormat"},
    "ctkPathLineEdit": _COMMON_API | {"currentPath", "setCurrentPath", "addCurrentPathToHistory", "filters",
                                      "nameFilters"},
    "ctkCollapsibleButton": _COMMON_API | {"collapsed", "text"},
    "QPlainTextEdit": _COMMON_API | {"setPlainText", "toPlainText", "textCursor", "clear"},
    "QLineEdit": _COMMON_API | {"text", "setText", "clear"},
    "qMRMLNodeComboBox": _COMMON_API | {"currentNode", "setCurrentNode", "currentNodeID", "setCurrentNodeID",
                                        "setMRMLScene", "nodeTypes"},
}
# Signals (normalized PythonQt signatures) of each widget class that the module files may connect to.
WIDGET_SIGNALS: Dict[str, Set[str]] = {
    "QPushButton": {"clicked(bool)", "clicked()", "toggled(bool)"},
    "QToolButton": {"clicked(bool)", "clicked()", "toggled(bool)"},
    "QCheckBox": {"toggled(bool)", "clicked(bool)", "stateChanged(int)"},
    "QComboBox": {"currentIndexChanged(int)", "currentTextChanged(QString)"},
    "QSpinBox": {"valueChanged(int)"},
    "QTableWidget": {"itemSelectionChanged()", "cellClicked(int,int)", "cellDoubleClicked(int,int)"},
    "QListWidget": {"itemSelectionChanged()", "currentRowChanged(int)"},
    "ctkPathLineEdit": {"currentPathChanged(QString)", "validInputChanged(bool)"},
    "qMRMLNodeComboBox": {"currentNodeChanged(vtkMRMLNode*)", "currentNodeChanged(bool)",
                          "currentNodeIDChanged(QString)"},
}
# Python types the parameterNodeWrapper GUI connectors can bind to each widget class.
PARAMETER_WIDGET_TYPES: Dict[str, Set[str]] = {
    "QCheckBox": {"bool"},
    "QSpinBox": {"int"},
    "QSlider": {"int"},
    "QDoubleSpinBox": {"float"},
    "ctkSliderWidget": {"float"},
    "QComboBox": {"str", "int", "float", "bool"},  # with a Choice annotation
    "QLineEdit": {"str"},
    "ctkPathLineEdit": {"pathlib.Path", "Path"},
    "ctkDirectoryButton": {"pathlib.Path", "Path"},
}
# Where user-visible text goes: attributes assigned, and (callable name, argument position or keyword).
TEXT_ATTRIBUTES = {"title", "helpText", "acknowledgementText", "text", "toolTip", "windowTitle", "placeholderText",
                   "statusTip", "labelText"}
TEXT_CALL_ARGUMENTS: Dict[str, Tuple[Tuple[int, ...], Tuple[str, ...]]] = {
    "setText": ((0,), ()), "setToolTip": ((0,), ()), "setWindowTitle": ((0,), ()), "setPlaceholderText": ((0,), ()),
    "setStatusTip": ((0,), ()), "setLabelText": ((0,), ()),
    "errorDisplay": ((0,), ("text", "windowTitle")), "warningDisplay": ((0,), ("text", "windowTitle")),
    "infoDisplay": ((0,), ("text", "windowTitle")), "confirmOkCancelDisplay": ((0,), ("text", "windowTitle")),
    "confirmYesNoDisplay": ((0,), ("text", "windowTitle")), "tryWithErrorDisplay": ((0,), ("message",)),
    "createProgressDialog": ((), ("labelText", "windowTitle")),
    "getExistingDirectory": ((1,), ("caption",)), "getOpenFileName": ((1,), ("caption",)),
    "getSaveFileName": ((1,), ("caption",)),
    "setHorizontalHeaderLabels": ((0,), ()),
}


# --------------------------------------------------------------------------- helpers
def module_file(module: str) -> Path:
    return REPO / module / f"{module}.py"


def ui_file(module: str) -> Path:
    return REPO / module / "Resources" / "UI" / f"{module}.ui"


def icon_file(module: str) -> Path:
    return REPO / module / "Resources" / "Icons" / f"{module}.png"


def lib_files(module: str) -> List[Path]:
    """Every file of ``<Module>Lib`` (caches excluded)."""
    lib = REPO / module / f"{module}Lib"
    return sorted(p for p in lib.rglob("*") if p.is_file() and "__pycache__" not in p.parts
                  and p.suffix not in (".pyc", ".pyo"))


def core_files(module: str) -> List[Path]:
    lib = REPO / module / f"{module}Lib"
    return [p for p in lib_files(module) if p.suffix == ".py" and "mrml" not in p.relative_to(lib).parts]


def adapter_files(module: str) -> List[Path]:
    lib = REPO / module / f"{module}Lib"
    return [p for p in lib_files(module) if p.suffix == ".py" and "mrml" in p.relative_to(lib).parts]


@cache
def parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def rel(path: Path) -> str:
    return path.relative_to(REPO).as_posix()


def top_level_class(module: str, name: str) -> ast.ClassDef:
    for node in parse(module_file(module)).body:
        if isinstance(node, ast.ClassDef) and node.name == name:
            return node
    raise AssertionError(f"{rel(module_file(module))}: no class {name}")


def methods(cls: ast.ClassDef) -> Dict[str, ast.FunctionDef]:
    return {n.name: n for n in cls.body if isinstance(n, ast.FunctionDef)}


def with_parents(tree: ast.AST) -> Dict[ast.AST, ast.AST]:
    parents: Dict[ast.AST, ast.AST] = {}
    for node in ast.walk(tree):
        for child in ast.iter_child_nodes(node):
            parents[child] = node
    return parents


def is_self_attr(node: ast.AST, name: str) -> bool:
    return (isinstance(node, ast.Attribute) and node.attr == name and isinstance(node.value, ast.Name)
            and node.value.id == "self")


def imported_top_names(tree: ast.AST) -> Iterator[Tuple[str, int]]:
    """Top-level package names imported anywhere in ``tree`` (also inside functions), absolute only,
    plus names passed as a literal to ``importlib.import_module`` / ``__import__``."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name.split(".")[0], node.lineno
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module.split(".")[0], node.lineno
        elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)
              and ((isinstance(node.func, ast.Name) and node.func.id == "__import__")
                   or (isinstance(node.func, ast.Attribute) and node.func.attr == "import_module"))):
            yield node.args[0].value.split(".")[0], node.lineno


# --------------------------------------------------------------------------- .ui files
@dataclass
class UiFile:
    path: Path
    class_name: str
    root_widget: ET.Element
    widgets: Dict[str, str] = field(default_factory=dict)  # objectName -> class
    layouts: Dict[str, str] = field(default_factory=dict)
    custom: Dict[str, ET.Element] = field(default_factory=dict)
    connections: List[Tuple[str, str, str, str]] = field(default_factory=list)
    parameter_bindings: Dict[str, str] = field(default_factory=dict)  # parameter name -> widget name


@cache
def load_ui(module: str) -> UiFile:
    path = ui_file(module)
    root = ET.parse(path).getroot()
    assert root.tag == "ui" and root.get("version") == "4.0", f"{rel(path)}: root must be <ui version=\"4.0\">"
    class_elements = root.findall("class")
    assert len(class_elements) == 1, f"{rel(path)}: exactly one <class> expected"
    top = root.findall("widget")
    assert len(top) == 1, f"{rel(path)}: exactly one top-level <widget> expected"
    ui = UiFile(path, (class_elements[0].text or "").strip(), top[0])
    for element in root.iter():
        if element.tag in ("widget", "layout", "spacer"):
            name = element.get("name")
            assert name, f"{rel(path)}: a <{element.tag}> has no name"
            assert name not in ui.widgets and name not in ui.layouts, f"{rel(path)}: object name {name!r} repeated"
            if element.tag == "widget":
                ui.widgets[name] = element.get("class") or ""
            elif element.tag == "layout":
                ui.layouts[name] = element.get("class") or ""
            else:
                ui.layouts[name] = "spacer"
    for custom in root.findall("customwidgets/customwidget"):
        ui.custom[(custom.findtext("class") or "").strip()] = custom
    for connection in root.findall("connections/connection"):
        ui.connections.append(tuple((connection.findtext(tag) or "").strip()  # type: ignore[arg-type]
                                    for tag in ("sender", "signal", "receiver", "slot")))
    for widget in root.iter("widget"):
        for prop in widget.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                ui.parameter_bindings[(prop.findtext("string") or "").strip()] = widget.get("name") or ""
    return ui


def widget_element(ui: UiFile, name: str) -> ET.Element:
    for element in ui.root_widget.iter("widget"):
        if element.get("name") == name:
            return element
    raise KeyError(name)


@pytest.mark.parametrize("module", MODULES)
def test_ui_is_a_valid_qt_designer_file(module: str) -> None:
    ui = load_ui(module)
    where = rel(ui.path)
    assert ui.class_name == module, f"{where}: <class> is {ui.class_name!r}, expected {module!r}"
    assert ui.root_widget.get("name") == module and ui.root_widget.get("class") == "qMRMLWidget", (
        f"{where}: the top-level widget must be a qMRMLWidget named {module} (uiWidget.setMRMLScene needs it)")
    for name, cls in ui.widgets.items():
        assert cls in QT_WIDGETS or cls in ui.custom, f"{where}: widget {name} of class {cls} is neither a Qt " \
                                                      "widget nor declared in <customwidgets>"
    used = set(ui.widgets.values())
    for cls, custom in ui.custom.items():
        assert custom.findtext("extends") and custom.findtext("header"), f"{where}: customwidget {cls} incomplete"
        assert cls in used, f"{where}: customwidget {cls} declared but not used"
    for name, cls in ui.layouts.items():
        assert cls in QT_LAYOUTS or cls == "spacer", f"{where}: layout {name} has unknown class {cls}"
    for layout in ui.root_widget.iter("layout"):
        cells = set()
        for item in layout.findall("item"):
            assert len(list(item)) == 1, f"{where}: an <item> of {layout.get('name')} must hold one element"
            if layout.get("class") in ("QFormLayout", "QGridLayout"):
                assert item.get("row") is not None and item.get("column") is not None, (
                    f"{where}: items of {layout.get('name')} need row and column")
                cell = (item.get("row"), item.get("column"))
                assert cell not in cells, f"{where}: two items at {cell} in {layout.get('name')}"
                cells.add(cell)
    for element in ui.root_widget.iter():
        for prop in element.findall("property"):
            values = list(prop)
            assert len(values) == 1, f"{where}: property {prop.get('name')} of {element.get('name')} needs one value"
            if prop.get("name") == "SlicerParameterName":
                assert prop.get("stdset") == "0", (
                    f"{where}: SlicerParameterName on {element.get('name')} is a dynamic property: stdset=\"0\"")
    signature = re.compile(r"^[A-Za-z_]\w*\([\w*&:, ]*\)$")
    for sender, signal, receiver, slot in ui.connections:
        assert sender in ui.widgets and receiver in ui.widgets, f"{where}: connection {sender} -> {receiver}"
        assert signature.match(signal) and signature.match(slot), f"{where}: malformed {signal} / {slot}"
    # Every MRML widget gets the scene from the top-level widget (the template's pattern).
    scene_receivers = {r for s, sig, r, slot in ui.connections
                       if s == module and sig == "mrmlSceneChanged(vtkMRMLScene*)"
                       and slot == "setMRMLScene(vtkMRMLScene*)"}
    for name, cls in ui.widgets.items():
        if cls.startswith("qMRML") and name != module:
            assert name in scene_receivers, f"{where}: {name} ({cls}) is not connected to mrmlSceneChanged"


def ui_uses(module: str) -> List[Tuple[str, Optional[str], ast.AST, ast.AST]]:
    """(widget name, attribute used on it or None, node, parent node) for every ``self.ui.<name>``."""
    tree = parse(module_file(module))
    parents = with_parents(tree)
    uses = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and is_self_attr(node.value, "ui"):
            parent = parents.get(node)
            attr = parent.attr if isinstance(parent, ast.Attribute) and parent.value is node else None
            uses.append((node.attr, attr, node, parent))  # type: ignore[arg-type]
    return uses


@pytest.mark.parametrize("module", MODULES)
def test_every_ui_name_the_widget_uses_exists_and_is_used_as_its_class_allows(module: str) -> None:
    ui = load_ui(module)
    uses = ui_uses(module)
    assert uses, f"{module}.py never uses self.ui"
    problems = []
    for name, attr, node, _parent in uses:
        if name not in ui.widgets and name not in ui.layouts:
            problems.append(f"line {node.lineno}: self.ui.{name} is not an objectName in {rel(ui.path)}")
            continue
        cls = ui.widgets.get(name, "")
        if attr is not None:
            api = WIDGET_API.get(cls)
            if api is None:
                problems.append(f"line {node.lineno}: no API table for {cls} (self.ui.{name}); add it after "
                                "checking the class documentation")
            elif attr not in api:
                problems.append(f"line {node.lineno}: self.ui.{name}.{attr}: {cls} has no (checked) attribute {attr}")
    assert not problems, "\n".join(problems)


def connections(module: str) -> List[Tuple[str, str, str, int]]:
    """(widget name, signal, slot method name, line) of ``self.ui.<w>.connect("signal", self.<slot>)``."""
    found = []
    for node in ast.walk(parse(module_file(module))):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "connect"
                and isinstance(node.func.value, ast.Attribute) and is_self_attr(node.func.value.value, "ui")):
            assert len(node.args) == 2 and isinstance(node.args[0], ast.Constant), (
                f"{module}.py line {node.lineno}: connect(\"signal(args)\", self.slot) expected")
            slot = node.args[1]
            assert isinstance(slot, ast.Attribute) and isinstance(slot.value, ast.Name) and slot.value.id == "self", (
                f"{module}.py line {node.lineno}: slot must be a method of the widget")
            found.append((node.func.value.attr, str(node.args[0].value), slot.attr, node.lineno))
    return found


@pytest.mark.parametrize("module", MODULES)
def test_widget_connects_real_signals_to_existing_slots(module: str) -> None:
    ui = load_ui(module)
    widget_methods = methods(top_level_class(module, f"{module}Widget"))
    found = connections(module)
    assert found, f"{module}.py connects no signal"
    for name, signal, slot, line in found:
        cls = ui.widgets.get(name, "")
        assert signal.replace(" ", "") in WIDGET_SIGNALS.get(cls, set()), (
            f"{module}.py line {line}: {cls} {name} has no (checked) signal {signal}")
        assert slot in widget_methods, f"{module}.py line {line}: slot self.{slot} is not a method of the widget"
        fn = widget_methods[slot]
        n_signal_args = len([a for a in signal[signal.index("(") + 1:-1].split(",") if a.strip()])
        n_required = len(fn.args.args) - 1 - len(fn.args.defaults)
        assert n_required <= n_signal_args, (
            f"{module}.py line {line}: self.{slot} requires {n_required} argument(s); {signal} passes {n_signal_args}")


def _check_call(call: ast.Call, fn: ast.FunctionDef, what: str) -> Optional[str]:
    params = [a.arg for a in fn.args.args[1:]]
    kwonly = [a.arg for a in fn.args.kwonlyargs]
    if len(call.args) > len(params) and fn.args.vararg is None:
        return f"{what}: {len(call.args)} positional argument(s), the method takes {len(params)}"
    for keyword in call.keywords:
        if keyword.arg is not None and keyword.arg not in params + kwonly and fn.args.kwarg is None:
            return f"{what}: no parameter {keyword.arg!r}"
    given = set(params[:len(call.args)]) | {k.arg for k in call.keywords if k.arg}
    required = params[:len(params) - len(fn.args.defaults)]
    missing = [p for p in required if p not in given]
    if missing and not any(isinstance(a, ast.Starred) for a in call.args):
        return f"{what}: required parameter(s) {missing} not given"
    return None


def logic_calls(module: str) -> List[Tuple[str, str, ast.Call]]:
    """(Logic class name, method, call) for ``self.logic.m(...)`` in the widget and ``SomeLogic().m(...)``
    anywhere in the module file."""
    found = []
    tree = parse(module_file(module))
    widget = top_level_class(module, f"{module}Widget")
    for node in ast.walk(widget):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and is_self_attr(node.func.value, "logic")):
            found.append((f"{module}Logic", node.func.attr, node))
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Call) and isinstance(node.func.value.func, ast.Name)
                and node.func.value.func.id.endswith("Logic")):
            found.append((node.func.value.func.id, node.func.attr, node))
    return found


@pytest.mark.parametrize("module", MODULES)
def test_every_logic_method_called_exists_with_a_matching_signature(module: str) -> None:
    found = logic_calls(module)
    assert any(cls == f"{module}Logic" for cls, _, _ in found), f"{module}Widget never calls its logic"
    problems = []
    for cls_name, method, call in found:
        owner = cls_name[: -len("Logic")]
        assert owner in MODULES, f"{module}.py line {call.lineno}: unknown logic class {cls_name}"
        logic_methods = methods(top_level_class(owner, cls_name))
        if method not in logic_methods:
            problems.append(f"{module}.py line {call.lineno}: {cls_name}.{method} does not exist")
            continue
        error = _check_call(call, logic_methods[method], f"{module}.py line {call.lineno}: {cls_name}.{method}")
        if error:
            problems.append(error)
    assert not problems, "\n".join(problems)


def top_level_names(module: str) -> Set[str]:
    names = set()
    for node in parse(module_file(module)).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return names


@pytest.mark.parametrize("module", MODULES)
def test_names_imported_from_other_module_files_exist(module: str) -> None:
    for node in ast.walk(parse(module_file(module))):
        if isinstance(node, ast.ImportFrom) and node.module in MODULES:
            missing = [a.name for a in node.names if a.name not in top_level_names(node.module)]
            assert not missing, f"{module}.py line {node.lineno}: {node.module}.py defines no {missing}"


def parameter_fields(module: str) -> Dict[str, Tuple[str, List[str]]]:
    """Parameter-node field -> (base type source, Annotated extras source)."""
    fields = {}
    for node in top_level_class(module, f"{module}ParameterNode").body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            annotation = node.annotation
            if (isinstance(annotation, ast.Subscript) and isinstance(annotation.value, ast.Name)
                    and annotation.value.id == "Annotated"):
                elements = annotation.slice.elts if isinstance(annotation.slice, ast.Tuple) else [annotation.slice]
                fields[node.target.id] = (ast.unparse(elements[0]), [ast.unparse(e) for e in elements[1:]])
            else:
                fields[node.target.id] = (ast.unparse(annotation), [])
    return fields


@pytest.mark.parametrize("module", MODULES)
def test_parameter_node_fields_match_the_ui_bindings(module: str) -> None:
    ui = load_ui(module)
    fields = parameter_fields(module)
    assert fields, f"{module}ParameterNode has no fields"
    source = module_file(module).read_text(encoding="utf-8")
    for parameter, widget_name in ui.parameter_bindings.items():
        assert parameter in fields, f"{rel(ui.path)}: {widget_name} is bound to unknown parameter {parameter!r}"
        base, extras = fields[parameter]
        cls = ui.widgets[widget_name]
        if cls == "qMRMLNodeComboBox":
            node_types = [s.text for s in widget_element(ui, widget_name).iter("string")
                          if s.text and s.text.startswith("vtkMRML")]
            assert base in node_types, f"{parameter}: {base} is not among the node types {node_types} of {widget_name}"
        else:
            assert base in PARAMETER_WIDGET_TYPES.get(cls, set()), (
                f"{parameter}: a {base} parameter cannot be bound to a {cls} ({widget_name})")
        if cls in ("QComboBox", "ctkComboBox"):
            assert any(e.startswith("Choice(") for e in extras), f"{parameter}: a combo box binding needs Choice"
    for parameter in fields:
        used = re.search(rf"_parameterNode\.{parameter}\b", source)
        assert parameter in ui.parameter_bindings or used, (
            f"{module}ParameterNode.{parameter} is neither bound nor used")


# --------------------------------------------------------------------------- text and translation
def _has_words(text: str) -> bool:
    return bool(re.search(r"[A-Za-z]{2,}", text))


def _translated(node: ast.AST) -> bool:
    """True when ``node`` is ``_("...")``, ``translate(...)``, ``_("...").format(...)``."""
    if isinstance(node, ast.Call):
        if isinstance(node.func, ast.Name) and node.func.id in ("_", "translate"):
            return True
        if isinstance(node.func, ast.Attribute) and node.func.attr == "format":
            return _translated(node.func.value)
    return False


def _literal_text(node: ast.AST) -> Optional[str]:
    """Untranslated literal words in ``node`` (None when there are none)."""
    if _translated(node):
        return None
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value if _has_words(node.value) else None
    if isinstance(node, ast.JoinedStr):
        literal = "".join(v.value for v in node.values if isinstance(v, ast.Constant) and isinstance(v.value, str))
        return literal if _has_words(literal) else None
    if isinstance(node, ast.BinOp):
        return _literal_text(node.left) or _literal_text(node.right)
    if isinstance(node, ast.IfExp):
        return _literal_text(node.body) or _literal_text(node.orelse)
    if isinstance(node, ast.BoolOp):
        for value in node.values:
            text = _literal_text(value)
            if text:
                return text
    if isinstance(node, (ast.List, ast.Tuple)):
        for element in node.elts:
            text = _literal_text(element)
            if text:
                return text
    return None


@pytest.mark.parametrize("module", MODULES)
def test_user_visible_text_goes_through_translation(module: str) -> None:
    tree = parse(module_file(module))
    imports_tr = any(isinstance(n, ast.ImportFrom) and n.module == "slicer.i18n"
                     and any(a.name == "tr" and a.asname == "_" for a in n.names) for n in tree.body)
    assert imports_tr, f"{module}.py must import 'from slicer.i18n import tr as _'"
    problems = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Attribute) and target.attr in TEXT_ATTRIBUTES:
                    text = _literal_text(node.value)
                    if text:
                        problems.append(f"line {node.lineno}: .{target.attr} = {text!r} is not translated")
        elif isinstance(node, ast.Call):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if name in TEXT_CALL_ARGUMENTS:
                positions, keywords = TEXT_CALL_ARGUMENTS[name]
                candidates = [node.args[i] for i in positions if i < len(node.args)]
                candidates += [k.value for k in node.keywords if k.arg in keywords]
                for candidate in candidates:
                    text = _literal_text(candidate)
                    if text:
                        problems.append(f"line {node.lineno}: {name}({text!r}) is not translated")
            if isinstance(node.func, ast.Name) and node.func.id == "_" and (
                    len(node.args) != 1 or node.keywords
                    or not (isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str))):
                problems.append(f"line {node.lineno}: _() takes exactly one string literal (lupdate reads it)")
            if (isinstance(node.func, ast.Attribute) and node.func.attr == "format" and _translated(node.func.value)
                    and isinstance(node.func.value, ast.Call) and isinstance(node.func.value.func, ast.Name)
                    and node.func.value.func.id == "_"):
                literal = node.func.value.args[0].value  # type: ignore[attr-defined]
                placeholders = {f for _, f, _, _ in string.Formatter().parse(literal) if f}
                given = {k.arg for k in node.keywords}
                if node.args or placeholders != given:
                    problems.append(f"line {node.lineno}: _({literal[:40]!r}...).format() must name exactly the "
                                    f"placeholders {sorted(placeholders)} (got {sorted(g for g in given if g)})")
    assert not problems, f"{module}.py:\n" + "\n".join(problems)


# --------------------------------------------------------------------------- layering
@pytest.mark.parametrize("module", MODULES)
def test_core_never_imports_slicer_qt_ctk_or_vtk(module: str) -> None:
    files = core_files(module)
    assert files, f"{module}Lib has no core files"
    problems = [f"{rel(path)} line {line}: imports {name}"
                for path in files for name, line in imported_top_names(parse(path))
                if name in CORE_FORBIDDEN or name.startswith("vtkSlicer")]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("module", MODULES)
def test_scene_adapters_stay_headless(module: str) -> None:
    """Adapters take the scene as an argument and never touch the application, Qt or slicer.util."""
    problems = []
    for path in adapter_files(module):
        tree = parse(path)
        for name, line in imported_top_names(tree):
            if name in ADAPTER_FORBIDDEN:
                problems.append(f"{rel(path)} line {line}: imports {name}")
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "slicer"
                    and node.attr in ADAPTER_FORBIDDEN_SLICER_ATTRIBUTES):
                problems.append(f"{rel(path)} line {node.lineno}: uses slicer.{node.attr}")
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "slicer":
                bad = [a.name for a in node.names if a.name in ADAPTER_FORBIDDEN_SLICER_ATTRIBUTES]
                if node.module != "slicer" or bad:
                    problems.append(f"{rel(path)} line {node.lineno}: from {node.module} import {bad or '...'}")
    assert not problems, "\n".join(problems)


def _owner(top_name: str) -> Optional[str]:
    for module in MODULES:
        if top_name in (module, f"{module}Lib"):
            return module
    return None


@pytest.mark.parametrize("module", MODULES)
def test_modules_use_each_other_only_in_the_architecture_direction(module: str) -> None:
    allowed = set(EXPECTED_DEPENDENCIES[module]) | {module}
    problems = []
    for path in [module_file(module), *[p for p in lib_files(module) if p.suffix == ".py"]]:
        for name, line in imported_top_names(parse(path)):
            owner = _owner(name)
            if owner is not None and owner not in allowed:
                problems.append(f"{rel(path)} line {line}: {module} must not use {owner} ({name})")
    assert not problems, "\n".join(problems)


def declared(module: str, attribute: str) -> Any:
    cls = top_level_class(module, module)
    for node in ast.walk(cls):
        if (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Attribute)
                and node.targets[0].attr == attribute and isinstance(node.targets[0].value, ast.Attribute)
                and node.targets[0].value.attr == "parent"):
            return node.value
    raise AssertionError(f"{module}.py: self.parent.{attribute} is not set")


@pytest.mark.parametrize("module", MODULES)
def test_declared_dependencies_follow_the_architecture(module: str) -> None:
    value = ast.literal_eval(declared(module, "dependencies"))
    assert value == EXPECTED_DEPENDENCIES[module]
    categories = declared(module, "categories")
    assert isinstance(categories, ast.List) and len(categories.elts) == 1
    element = categories.elts[0]
    literal = element.args[1] if isinstance(element, ast.Call) and len(element.args) == 2 else element
    assert isinstance(literal, ast.Constant) and literal.value == CATEGORY


@pytest.mark.parametrize("module", MODULES)
def test_module_file_defines_the_slicer_classes(module: str) -> None:
    expected_bases = {
        module: "ScriptedLoadableModule",
        f"{module}Widget": "ScriptedLoadableModuleWidget",
        f"{module}Logic": "ScriptedLoadableModuleLogic",
        f"{module}Test": "ScriptedLoadableModuleTest",
    }
    for name, base in expected_bases.items():
        cls = top_level_class(module, name)
        assert base in [ast.unparse(b) for b in cls.bases], f"{module}.py: {name} must derive from {base}"
    parameter_node = top_level_class(module, f"{module}ParameterNode")
    assert [ast.unparse(d) for d in parameter_node.decorator_list] == ["parameterNodeWrapper"]
    test_methods = methods(top_level_class(module, f"{module}Test"))
    assert "runTest" in test_methods and "setUp" in test_methods
    runners = [name for name, fn in test_methods.items() if "runScenarios(self, scenarios())" in ast.unparse(fn)]
    assert runners, f"{module}Test has no method calling runScenarios(self, scenarios())"
    assert f"self.{runners[0]}()" in ast.unparse(test_methods["runTest"]), f"{module}Test.runTest skips the scenarios"
    widget_methods = methods(top_level_class(module, f"{module}Widget"))
    setup = ast.unparse(widget_methods["setup"])
    assert f"self.resourcePath('UI/{module}.ui')" in setup and "childWidgetVariables" in setup


@pytest.mark.parametrize("module", MODULES)
def test_lib_packages_are_imported_lazily_after_the_requirements(module: str) -> None:
    """A ``*Lib`` import at the top of a module file would run before the missing packages are
    installed; inside a function it must come after a requireCore()/_requireCore() call."""
    tree = parse(module_file(module))
    for node in tree.body:
        names = [n for n, _ in imported_top_names(node)] if isinstance(node, (ast.Import, ast.ImportFrom)) else []
        assert not any(n.endswith("Lib") for n in names), f"{module}.py line {node.lineno}: top-level Lib import"
    for fn in ast.walk(tree):
        if not isinstance(fn, ast.FunctionDef):
            continue
        seen_require = False
        for statement in fn.body:
            text = ast.unparse(statement)
            if re.search(r"\b_?requireCore\(", text):
                seen_require = True
            is_import = isinstance(statement, (ast.Import, ast.ImportFrom))
            names = [n for n, _ in imported_top_names(statement)] if is_import else []
            if any(n.endswith("Lib") for n in names):
                assert seen_require, f"{module}.py {fn.name} line {statement.lineno}: Lib import before requireCore()"


PY39 = (3, 9)


def python_files() -> List[Path]:
    files = [module_file(m) for m in MODULES]
    for m in MODULES:
        files += [p for p in lib_files(m) if p.suffix == ".py"]
        files += sorted((REPO / m / "Testing").rglob("*.py"))
    files += sorted((REPO / "Testing").glob("*.py"))
    return files


@pytest.mark.parametrize("path", python_files(), ids=rel)
def test_python_files_are_valid_python_3_9(path: Path) -> None:
    source = path.read_text(encoding="utf-8")
    tree = ast.parse(source, filename=str(path), feature_version=PY39)
    future = any(isinstance(n, ast.ImportFrom) and n.module == "__future__"
                 and any(a.name == "annotations" for a in n.names) for n in tree.body)
    if future:
        return
    # Without the __future__ import annotations are evaluated (parameterNodeWrapper, dataclasses
    # at definition time): X | Y fails on 3.9.
    for node in ast.walk(tree):
        annotations = []
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            annotations += [a.annotation for a in node.args.args + node.args.kwonlyargs if a.annotation]
            annotations += [node.returns] if node.returns else []
        elif isinstance(node, ast.AnnAssign):
            annotations.append(node.annotation)
        for annotation in annotations:
            for sub in ast.walk(annotation):
                assert not (isinstance(sub, ast.BinOp) and isinstance(sub.op, ast.BitOr)), (
                    f"{rel(path)} line {sub.lineno}: 'X | Y' annotation fails on Python 3.9; use Optional/Union")


# --------------------------------------------------------------------------- CMake
def cmake_commands(path: Path) -> List[Tuple[str, List[str]]]:
    """(command, arguments) of a CMakeLists.txt, comments removed, quotes stripped."""
    text = path.read_text(encoding="utf-8")
    cleaned, in_quote, i = [], False, 0
    while i < len(text):
        c = text[i]
        if c == '"' and (i == 0 or text[i - 1] != "\\"):
            in_quote = not in_quote
        if c == "#" and not in_quote:
            while i < len(text) and text[i] != "\n":
                i += 1
            continue
        cleaned.append(c)
        i += 1
    body = "".join(cleaned)
    commands = []
    command = re.compile(r"([A-Za-z_]\w*)\s*\(")
    pos = 0
    while True:
        match = command.search(body, pos)
        if match is None:
            return commands
        depth, j, quote = 1, match.end(), False
        while depth:
            ch = body[j]
            if ch == '"' and body[j - 1] != "\\":
                quote = not quote
            elif not quote and ch == "(":
                depth += 1
            elif not quote and ch == ")":
                depth -= 1
            j += 1
        inner = body[match.end():j - 1]
        args = [quoted if unquoted == "" else unquoted
                for quoted, unquoted in re.findall(r'"((?:[^"\\]|\\.)*)"|([^\s"]+)', inner)]
        commands.append((match.group(1), args))
        pos = j


def cmake_set(commands: List[Tuple[str, List[str]]], variable: str) -> List[str]:
    for name, args in commands:
        if name == "set" and args and args[0] == variable:
            return args[1:]
    raise AssertionError(f"set({variable} ...) not found")


def expected_cmake_lists(module: str) -> Tuple[List[str], List[str]]:
    base = REPO / module
    scripts = [f"{module}.py"] + [p.relative_to(base).as_posix() for p in lib_files(module) if p.suffix == ".py"]
    data = [p.relative_to(base).as_posix() for p in lib_files(module) if p.suffix != ".py"]
    resources = [f"Resources/Icons/{module}.png", f"Resources/UI/{module}.ui", *data]
    return scripts, resources


def _cmake_block(module: str) -> str:
    scripts, resources = expected_cmake_lists(module)
    def fmt(items: List[str]) -> str:
        return "".join(f"  {i.replace(module, '${MODULE_NAME}', 1)}\n" for i in items)
    return f"set(MODULE_PYTHON_SCRIPTS\n{fmt(scripts)}  )\n\nset(MODULE_PYTHON_RESOURCES\n{fmt(resources)}  )"


@pytest.mark.parametrize("module", MODULES)
def test_module_cmakelists_lists_every_file_and_nothing_else(module: str) -> None:
    path = REPO / module / "CMakeLists.txt"
    commands = cmake_commands(path)
    assert cmake_set(commands, "MODULE_NAME") == [module]
    listed_scripts = [a.replace("${MODULE_NAME}", module) for a in cmake_set(commands, "MODULE_PYTHON_SCRIPTS")]
    listed_resources = [a.replace("${MODULE_NAME}", module) for a in cmake_set(commands, "MODULE_PYTHON_RESOURCES")]
    scripts, resources = expected_cmake_lists(module)
    hint = f"\nPaste into {rel(path)}:\n{_cmake_block(module)}"
    assert len(set(listed_scripts)) == len(listed_scripts), f"{rel(path)}: a script is listed twice"
    assert sorted(listed_scripts) == sorted(scripts), (
        f"{rel(path)}: missing {sorted(set(scripts) - set(listed_scripts))}, "
        f"not existing {sorted(set(listed_scripts) - set(scripts))}{hint}")
    module_resources = sorted(p.relative_to(REPO / module).as_posix()
                              for p in (REPO / module / "Resources").rglob("*") if p.is_file())
    expected_resources = sorted(set(resources) | set(module_resources))
    assert sorted(listed_resources) == expected_resources, (
        f"{rel(path)}: resources listed {sorted(listed_resources)}, files {expected_resources}{hint}")
    for item in listed_scripts + listed_resources:
        assert (REPO / module / item).is_file(), f"{rel(path)} lists {item}, which does not exist"
    build = [args for name, args in commands if name == "slicerMacroBuildScriptedModule"]
    assert build == [["NAME", "${MODULE_NAME}", "SCRIPTS", "${MODULE_PYTHON_SCRIPTS}", "RESOURCES",
                      "${MODULE_PYTHON_RESOURCES}", "WITH_GENERIC_TESTS"]]
    assert ("slicer_add_python_unittest", ["SCRIPT", "${MODULE_NAME}.py"]) in commands
    if ("add_subdirectory", ["Testing"]) in commands:
        assert (REPO / module / "Testing" / "CMakeLists.txt").is_file()
        for name, args in cmake_commands(REPO / module / "Testing" / "CMakeLists.txt"):
            if name == "add_subdirectory":
                assert (REPO / module / "Testing" / args[0] / "CMakeLists.txt").is_file()


def test_top_level_cmakelists_describes_the_extension() -> None:
    commands = cmake_commands(REPO / "CMakeLists.txt")
    names = [name for name, _ in commands]
    assert names[0] == "cmake_minimum_required" and ("project", ["MultiModalAnnotation"]) in commands
    assert cmake_set(commands, "EXTENSION_HOMEPAGE") == [HOMEPAGE]
    for variable in ("EXTENSION_CATEGORY", "EXTENSION_CONTRIBUTORS", "EXTENSION_DESCRIPTION"):
        assert cmake_set(commands, variable) and all(cmake_set(commands, variable)), variable
    assert cmake_set(commands, "EXTENSION_DEPENDS") == ["SlicerRT"]
    (icon_url,) = cmake_set(commands, "EXTENSION_ICONURL")
    assert icon_url.startswith(RAW_BASE) and (REPO / icon_url[len(RAW_BASE):]).is_file(), icon_url
    (screenshot_url,) = cmake_set(commands, "EXTENSION_SCREENSHOTURLS")
    assert screenshot_url.startswith(RAW_BASE)
    assert ("find_package", ["Slicer", "REQUIRED"]) in commands
    assert ("include", ["${Slicer_USE_FILE}"]) in commands
    subdirectories = [args[0] for name, args in commands if name == "add_subdirectory"]
    assert subdirectories == list(MODULES), "modules must be added after the modules they depend on"
    includes = [args for name, args in commands if name == "include"]
    assert includes[-2:] == [["${Slicer_EXTENSION_GENERATE_CONFIG}"], ["${Slicer_EXTENSION_CPACK}"]]
    globs = [args for name, args in commands if name == "file" and args[0] == "GLOB_RECURSE"]
    assert globs and "CONFIGURE_DEPENDS" in globs[0]
    for module in MODULES:
        homepage = [n for n in parse(module_file(module)).body if isinstance(n, ast.Assign)
                    and any(isinstance(t, ast.Name) and t.id == "HOMEPAGE" for t in n.targets)]
        assert homepage and ast.literal_eval(homepage[0].value) == HOMEPAGE, f"{module}.py HOMEPAGE"


# A restatement of the Extensions Index catalog-entry rules (schema v1.0.x), plus what this
# project requires on top (revision, dependencies, tier).
CATALOG_ENTRY_SCHEMA: Dict[str, Any] = {
    "type": "object",
    "required": ["$schema", "category", "scm_url", "scm_revision", "build_dependencies", "tier"],
    "additionalProperties": False,
    "properties": {
        "$schema": {"type": "string", "pattern": r"^https://raw\.githubusercontent\.com/Slicer/Slicer/main/Schemas/"
                                                 r"slicer-extension-catalog-entry-schema-v1\.0\.\d+\.json#$"},
        "category": {"type": "string", "minLength": 1},
        "scm_url": {"type": "string", "pattern": r"^https://"},
        "scm_revision": {"type": "string", "minLength": 1},
        "scm_type": {"enum": ["git", "local"]},
        "build_dependencies": {"type": "array", "items": {"type": "string"}},
        "build_subdirectory": {"type": "string"},
        "dicom_support_rule": {"type": "string"},
        "enabled": {"type": "boolean"},
        "tier": {"type": "integer", "minimum": 1, "maximum": 5},
    },
}


def test_extensions_index_catalog_entry() -> None:
    import jsonschema

    entry = json.loads((REPO / "Resources" / "ExtensionsIndex" / "MultiModalAnnotation.json").read_text("utf-8"))
    jsonschema.validate(entry, CATALOG_ENTRY_SCHEMA)
    assert entry["build_dependencies"] == ["SlicerRT"]
    assert entry["scm_url"] in (HOMEPAGE, HOMEPAGE + ".git")
    commands = cmake_commands(REPO / "CMakeLists.txt")
    assert cmake_set(commands, "EXTENSION_CATEGORY") == [entry["category"]]


# --------------------------------------------------------------------------- icons
def read_png(path: Path) -> Tuple[int, int, int, int, bytes]:
    """(width, height, bit depth, colour type, raw scanlines) after checking every chunk CRC."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{rel(path)}: not a PNG file"
    pos, chunks = 8, []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, payload = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        assert zlib.crc32(kind + payload) & 0xFFFFFFFF == crc, f"{rel(path)}: bad CRC in {kind!r}"
        chunks.append((kind, payload))
        pos += 12 + length
    assert chunks[0][0] == b"IHDR" and chunks[-1][0] == b"IEND", f"{rel(path)}: IHDR first, IEND last"
    width, height, depth, colour, _c, _f, interlace = struct.unpack(">IIBBBBB", chunks[0][1])
    assert interlace == 0
    raw = zlib.decompress(b"".join(p for k, p in chunks if k == b"IDAT"))
    return width, height, depth, colour, raw


@pytest.mark.parametrize("module", MODULES)
def test_icon_is_a_128_by_128_png_with_a_picture(module: str) -> None:
    width, height, depth, colour, raw = read_png(icon_file(module))
    assert (width, height) == (128, 128)
    assert depth == 8 and colour in (2, 6)
    channels = 4 if colour == 6 else 3
    assert len(raw) == height * (1 + width * channels)
    rows = [raw[r * (1 + width * channels) + 1:(r + 1) * (1 + width * channels)] for r in range(height)]
    assert len(set(rows)) > 10, f"{module}.png looks blank"


# --------------------------------------------------------------------------- requirements
def requirement_lines() -> List[str]:
    text = (REPO / "Resources" / "requirements.txt").read_text(encoding="utf-8")
    return [line.split("#", 1)[0].strip() for line in text.splitlines() if line.split("#", 1)[0].strip()]


def _dist_name(requirement: str) -> str:
    return re.split(r"[<>=!~;\[ @]", requirement, maxsplit=1)[0].strip().lower()


def pyproject_dependencies() -> List[str]:
    text = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    block = re.search(r"^\[project\].*?^dependencies\s*=\s*\[(.*?)^\]", text, re.S | re.M)
    assert block, "pyproject.toml: [project] dependencies not found"
    return re.findall(r'"([^"]+)"', block.group(1))


def test_requirements_are_importable_and_in_step_with_pyproject() -> None:
    lines = requirement_lines()
    assert lines, "Resources/requirements.txt lists no requirement"
    dependencies = pyproject_dependencies()
    for line in lines:
        assert line in dependencies, f"requirements.txt {line!r} is not a pyproject dependency (same specifier)"
        importlib.import_module(_dist_name(line).replace("-", "_"))
    text = (REPO / "Resources" / "requirements.txt").read_text(encoding="utf-8")
    bundled = re.search(r"^# bundled-with-slicer:(.*)$", text, re.M)
    assert bundled, "requirements.txt must say which dependencies Slicer ships (# bundled-with-slicer: ...)"
    bundled_names = {n.lower() for n in bundled.group(1).split()}
    assert {_dist_name(d) for d in dependencies} == {_dist_name(r) for r in lines} | bundled_names
    assert not bundled_names & {_dist_name(r) for r in lines}


def test_sample_kinds_of_the_panel_are_the_core_kinds() -> None:
    from MultiModalAnnotationLib.cli import build_parser
    from RTSSBridgeLib.samples import KINDS

    assigned = [n for n in parse(module_file("MultiModalAnnotation")).body if isinstance(n, ast.Assign)
                and any(isinstance(t, ast.Name) and t.id == "SAMPLE_KINDS" for t in n.targets)]
    panel_kinds = tuple(ast.literal_eval(assigned[0].value))
    assert panel_kinds == tuple(KINDS)
    subparsers = next(a for a in build_parser()._actions if a.dest == "command")
    sample = subparsers.choices["sample"]  # type: ignore[index]
    kind = next(a for a in sample._actions if a.dest == "kind")
    assert tuple(kind.choices) == panel_kinds


# --------------------------------------------------------------------------- run time (stand-ins)
@pytest.mark.slicer
@pytest.mark.parametrize("module", MODULES)
def test_module_description_is_complete_and_translated(module: str, slicer_modules: Dict[str, Any]) -> None:
    from .slicer_gui_stubs import Translated

    mod = slicer_modules[module]
    parent = types.SimpleNamespace(path=str(module_file(module)))
    getattr(mod, module)(parent)
    for attribute in ("title", "helpText", "acknowledgementText"):
        value = getattr(parent, attribute)
        assert isinstance(value, Translated) and value.strip() and "(template default)" not in value, attribute
    assert parent.categories == [CATEGORY] and all(isinstance(c, Translated) for c in parent.categories)
    assert parent.dependencies == EXPECTED_DEPENDENCIES[module]
    assert parent.contributors and all(isinstance(c, str) and c.strip() for c in parent.contributors)
    assert HOMEPAGE in parent.helpText


@pytest.mark.slicer
@pytest.mark.parametrize("module", MODULES)
def test_widget_and_logic_classes_construct(module: str, slicer_modules: Dict[str, Any]) -> None:
    mod = slicer_modules[module]
    widget = getattr(mod, f"{module}Widget")(None)
    assert widget.logic is None
    logic = getattr(mod, f"{module}Logic")()
    parameters = logic.getParameterNode()
    for name, (_base, _extras, default) in type(parameters).allParameters.items():
        assert getattr(parameters, name) == default
    assert parameters.parameterNode.GetAttribute("ModuleName") == module


@pytest.mark.slicer
def test_parameter_node_refuses_values_outside_its_annotations(slicer_modules: Dict[str, Any]) -> None:
    parameters = slicer_modules["MultiModalAnnotation"].MultiModalAnnotationLogic().getParameterNode()
    parameters.sampleKind = "pet-ct"
    assert parameters.parameterNode.GetParameter("sampleKind") == "pet-ct"
    with pytest.raises(ValueError, match="not one of"):
        parameters.sampleKind = "no-such-kind"
    with pytest.raises(ValueError, match="outside"):
        parameters.sampleSeed = -1


@pytest.mark.slicer
@pytest.mark.parametrize("module", MODULES)
def test_module_self_test_passes_headless(module: str, slicer_modules: Dict[str, Any]) -> None:
    """The module's own Test class (what Slicer's self-test and ctest run) against a real scene."""
    test_case = getattr(slicer_modules[module], f"{module}Test")()
    test_case.runTest()
    assert any("passed" in message for message in test_case.displayed)


@pytest.mark.slicer
def test_requirements_check_finds_what_is_missing(slicer_modules: Dict[str, Any]) -> None:
    bridge = slicer_modules["RTSSBridge"]
    path = Path(bridge.requirementsPath())
    assert path == REPO / "Resources" / "requirements.txt"
    assert bridge.readRequirements(str(path)) == requirement_lines()
    assert bridge.missingRequirements(requirement_lines()) == []
    absent = ["mmanno-surely-absent-package>=1", "numpy<1.0"]
    assert bridge.missingRequirements(absent) == absent


@pytest.mark.slicer
def test_missing_requirements_are_installed_headless_with_a_log_line(
        slicer_modules: Dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    import slicer

    bridge = slicer_modules["RTSSBridge"]
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("# test\nmmanno-surely-absent-package>=1\nnumpy>=1.0\n", encoding="utf-8")
    monkeypatch.setattr(bridge, "requirementsPath", lambda: str(requirements))
    installed: List[Any] = []
    monkeypatch.setattr(slicer.util, "pip_install", installed.append)
    with caplog.at_level(logging.INFO), pytest.raises(RuntimeError, match="still missing"):
        bridge.ensureRequirements("Tester")
    assert installed == [["mmanno-surely-absent-package>=1"]]
    assert "Tester: installing missing Python packages: mmanno-surely-absent-package>=1" in caplog.text

    installed.clear()
    asked: List[str] = []
    monkeypatch.setattr(slicer.util, "confirmOkCancelDisplay", lambda text, **kw: asked.append(text) or False)
    assert bridge.ensureRequirements("Tester", interactive=True) is False
    assert installed == [] and "mmanno-surely-absent-package>=1" in asked[0]
    monkeypatch.setattr(bridge, "_hasMainWindow", lambda: True)
    with pytest.raises(RuntimeError, match="cannot run without"):
        bridge.requireCore("Tester")


@pytest.mark.slicer
def test_logic_uses_the_application_scene_by_default(slicer_modules: Dict[str, Any], mrml_scene: Any,
                                                      tmp_path: Path) -> None:
    from RTSSBridgeLib.mrml.scenarios import write_oblique_nifti

    written = write_oblique_nifti(tmp_path / "labels.nii.gz")
    (node,) = slicer_modules["RTSSBridge"].RTSSBridgeLogic().load(str(written["path"]), labelmap=True)
    assert node.GetScene() is mrml_scene
    geometry = slicer_modules["QCMetrics"].QCMetricsLogic().describeGeometry(node)
    assert geometry["shape"] == [6, 5, 4] and geometry["node_class"] == "vtkMRMLLabelMapVolumeNode"
    annotation_logic = slicer_modules["MultiModalAnnotation"].MultiModalAnnotationLogic()
    assert annotation_logic.sampleFolder(str(tmp_path), "xray-ra", 5) == str(tmp_path / "xray-ra-seed5")
    (tmp_path / "xray-ra-seed5").mkdir()
    assert annotation_logic.sampleFolder(str(tmp_path), "xray-ra", 5) == str(tmp_path / "xray-ra-seed5-2")


# --------------------------------------------------------------------------- the build
STUB_SLICER_CONFIG = r"""
# Stand-in for Slicer's CMake package: only what the extension's CMakeLists use. The macros check
# their arguments as Slicer's do (unknown keywords, files that do not exist) and install files the
# way ctkMacroCompilePythonScript lays them out.
set(Slicer_USE_FILE ${CMAKE_CURRENT_LIST_DIR}/UseSlicer.cmake)
set(Slicer_EXTENSION_GENERATE_CONFIG ${CMAKE_CURRENT_LIST_DIR}/Empty.cmake)
set(Slicer_EXTENSION_CPACK ${CMAKE_CURRENT_LIST_DIR}/Empty.cmake)
set(Slicer_QTSCRIPTEDMODULES_LIB_DIR lib/Slicer-5.8/qt-scripted-modules)
set(Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR lib/Slicer-5.8/qt-scripted-modules)
function(slicerMacroBuildScriptedModule)
  cmake_parse_arguments(MY "WITH_GENERIC_TESTS;WITH_SUBDIR;VERBOSE" "NAME" "SCRIPTS;RESOURCES" ${ARGN})
  if(MY_UNPARSED_ARGUMENTS)
    message(FATAL_ERROR "unknown arguments ${MY_UNPARSED_ARGUMENTS}")
  endif()
  foreach(f IN LISTS MY_SCRIPTS MY_RESOURCES)
    if(NOT EXISTS ${CMAKE_CURRENT_SOURCE_DIR}/${f})
      message(FATAL_ERROR "slicerMacroBuildScriptedModule(${MY_NAME}) given nonexistent file ${f}")
    endif()
    get_filename_component(d ${f} DIRECTORY)
    configure_file(${CMAKE_CURRENT_SOURCE_DIR}/${f}
                   ${CMAKE_BINARY_DIR}/${Slicer_QTSCRIPTEDMODULES_LIB_DIR}/${f} COPYONLY)
    install(FILES ${CMAKE_CURRENT_SOURCE_DIR}/${f} DESTINATION ${Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR}/${d})
  endforeach()
  set_property(GLOBAL APPEND PROPERTY STUB_SLICER_MODULES ${MY_NAME})
endfunction()
function(slicer_add_python_unittest)
  cmake_parse_arguments(MY "" "SCRIPT" "SLICER_ARGS;TESTNAME_PREFIX" ${ARGN})
  if(NOT EXISTS ${CMAKE_CURRENT_SOURCE_DIR}/${MY_SCRIPT})
    message(FATAL_ERROR "slicer_add_python_unittest: no ${MY_SCRIPT}")
  endif()
  set_property(GLOBAL APPEND PROPERTY STUB_SLICER_TESTS ${MY_SCRIPT})
endfunction()
"""
STUB_USE_SLICER = r"""
set(BUILD_TESTING ON)
"""


@pytest.fixture(scope="module")
def installed_extension(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The extension configured with the stand-in Slicer package and installed; returns the
    installed qt-scripted-modules folder."""
    cmake = shutil.which("cmake")
    if cmake is None:
        pytest.skip("cmake is not installed (Debian package 'cmake'); the build files are checked statically only")
    work = tmp_path_factory.mktemp("cmake")
    slicer_dir = work / "SlicerStub"
    slicer_dir.mkdir()
    (slicer_dir / "SlicerConfig.cmake").write_text(STUB_SLICER_CONFIG, encoding="utf-8")
    (slicer_dir / "UseSlicer.cmake").write_text(STUB_USE_SLICER, encoding="utf-8")
    (slicer_dir / "Empty.cmake").write_text("", encoding="utf-8")
    build, prefix = work / "build", work / "install"
    for command in ([cmake, "-S", str(REPO), "-B", str(build), f"-DSlicer_DIR={slicer_dir}"],
                    [cmake, "--install", str(build), "--prefix", str(prefix)]):
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}"
    return prefix / "lib" / "Slicer-5.8" / "qt-scripted-modules"


def test_extension_installs_every_module_file_and_the_shared_resources(installed_extension: Path) -> None:
    for module in MODULES:
        scripts, resources = expected_cmake_lists(module)
        for item in scripts + resources:
            assert (installed_extension / item).is_file(), f"{item} was not installed"
    shared = [p.relative_to(REPO / "Resources").as_posix() for p in (REPO / "Resources").rglob("*")
              if p.is_file() and p.relative_to(REPO / "Resources").parts[0] != "ExtensionsIndex"]
    assert "requirements.txt" in shared
    for item in shared:
        assert (installed_extension / "Resources" / item).is_file(), f"shared resource {item} was not installed"
    assert not (installed_extension / "Resources" / "ExtensionsIndex").exists()


@pytest.mark.slicer
def test_installed_modules_find_their_resources(installed_extension: Path) -> None:
    """Run Python on the installed tree: the module file finds requirements.txt beside it and the
    core finds the shared schemas, from the installed copies (not from the source tree)."""
    script = f"""
import importlib.util, sys
sys.path.insert(0, {str(installed_extension)!r})
spec = importlib.util.spec_from_file_location("slicer_gui_stubs", {str(REPO / 'Testing' / 'slicer_gui_stubs.py')!r})
stubs = importlib.util.module_from_spec(spec); spec.loader.exec_module(stubs)
stubs.install(lambda d, k, v: d.__setitem__(k, v), lambda o, n, v, raising=False: setattr(o, n, v))
import RTSSBridge, RTSSBridgeLib
from RTSSBridgeLib.samples import schema_path
print(RTSSBridge.__file__); print(RTSSBridgeLib.__file__); print(RTSSBridge.requirementsPath()); print(schema_path())
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False,
                            cwd=str(installed_extension))
    assert result.returncode == 0, result.stderr
    for line in result.stdout.split():
        assert Path(line).resolve().is_relative_to(installed_extension.resolve()), line
    assert result.stdout.split()[2].endswith(os.path.join("Resources", "requirements.txt"))


def test_contract_helpers_detect_violations(tmp_path: Path) -> None:
    """The checks above can fail: they flag untranslated text, a bad _() call and a core import."""
    tree = ast.parse('label.text = "Hello there"\nlabel.setToolTip(f"Count {n} items")\n_(name)\n')
    texts = [_literal_text(n.value) for n in ast.walk(tree) if isinstance(n, ast.Assign)]
    assert texts == ["Hello there"]
    call = next(n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "attr", "") == "setToolTip")
    assert _literal_text(call.args[0]) == "Count  items"
    assert _literal_text(ast.parse('_("Hello").format(a=1)', mode="eval").body) is None
    assert [n for n, _ in imported_top_names(ast.parse("def f():\n    import vtk\n"))] == ["vtk"]
    assert [n for n, _ in imported_top_names(ast.parse("importlib.import_module('slicer.util')"))] == ["slicer"]
    fn = ast.parse("def m(self, a, b=1, *, c=2): pass").body[0]
    assert isinstance(fn, ast.FunctionDef)
    assert _check_call(ast.parse("x.m(1, d=3)", mode="eval").body, fn, "m") == "m: no parameter 'd'"  # type: ignore[arg-type]
    assert _check_call(ast.parse("x.m()", mode="eval").body, fn, "m") is not None  # type: ignore[arg-type]
    assert _check_call(ast.parse("x.m(1, c=3)", mode="eval").body, fn, "m") is None  # type: ignore[arg-type]
    cmake = tmp_path / "CMakeLists.txt"
    cmake.write_text('set(A "x y" z) # set(B c)\nfoo(${A}) \n', encoding="utf-8")
    assert cmake_commands(cmake) == [("set", ["A", "x y", "z"]), ("foo", ["${A}"])]

