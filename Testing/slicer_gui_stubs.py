"""Stand-ins for the parts of Slicer that exist only inside the application (tests only).

The slicer-core wheel gives a real MRML scene and ``slicer.util``, but not ``qt``, ``ctk``,
``slicer.ScriptedLoadableModule``, ``slicer.parameterNodeWrapper`` or ``slicer.i18n``. With these
stand-ins placed in ``sys.modules`` (by the ``slicer_modules`` fixture of ``conftest.py``, for
the duration of one test) the module files import, their classes are defined exactly as Slicer
defines them, and their Logic and Test classes run headless against the real scene.

The stand-ins are strict where the real thing is strict at import time:

* :func:`parameterNodeWrapper` evaluates the annotations with ``typing.get_type_hints`` as the
  real decorator does, so an annotation that Python 3.9 cannot evaluate (``X | None``) or an
  unknown name fails here too; defaults are checked against ``Choice`` and ``WithinRange``.
* ``_()`` and ``translate()`` return :class:`Translated` strings, so tests can tell text that
  went through the translation functions from text that did not.

Nothing here is shipped: only ``Testing/`` imports it.
"""

from __future__ import annotations

import os
import sys
import types
import typing
import unittest
from typing import Any, Callable, Dict, List, Optional, Tuple


class Translated(str):
    """A string that went through ``_()`` / ``tr()`` / ``translate()``."""

    def format(self, *args: Any, **kwargs: Any) -> Translated:  # keep the mark through .format()
        return Translated(str.format(self, *args, **kwargs))


def tr(text: str) -> Translated:
    if not isinstance(text, str):
        raise TypeError(f"_() takes a string literal, got {type(text).__name__}")
    return Translated(text)


def translate(context: str, text: str) -> Translated:
    if not isinstance(context, str) or not isinstance(text, str):
        raise TypeError("translate(context, text) takes two strings")
    return Translated(text)


# --------------------------------------------------------------------------- permissive Qt/CTK
class _AnyClass:
    """A class that accepts any constructor arguments and any attribute access."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args
        self.kwargs = kwargs

    def __getattr__(self, name: str) -> Any:
        return _AnyClass()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return _AnyClass()


class _PermissiveModule(types.ModuleType):
    """``qt`` / ``ctk``: every attribute is a class; nothing runs (widgets are never built in tests)."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return type(name, (_AnyClass,), {})


# --------------------------------------------------------------------------- ScriptedLoadableModule
class ScriptedLoadableModule:
    def __init__(self, parent: Any) -> None:
        self.parent = parent
        self.moduleName = self.__class__.__name__
        parent.title = ""
        parent.categories = []
        parent.dependencies = []
        parent.contributors = ["(template default)"]
        parent.helpText = tr("(template default)")
        parent.acknowledgementText = tr("(template default)")

    def resourcePath(self, filename: str) -> str:
        return os.path.join(os.path.dirname(self.parent.path), "Resources", filename)


class ScriptedLoadableModuleWidget:
    def __init__(self, parent: Any = None) -> None:
        self.parent = parent
        self.moduleName = self.__class__.__name__[: -len("Widget")]

    def setup(self) -> None:
        raise RuntimeError("widgets need the Slicer application (Qt); tests never build them")

    def resourcePath(self, filename: str) -> str:
        module = sys.modules[self.__class__.__module__]
        return os.path.join(os.path.dirname(str(module.__file__)), "Resources", filename)


class ScriptedLoadableModuleLogic:
    def __init__(self, parent: Any = None) -> None:
        self.parent = parent
        name = self.__class__.__name__
        self.moduleName = name[: -len("Logic")] if name.endswith("Logic") else name
        self.isSingletonParameterNode = True

    def getParameterNode(self) -> Any:
        import slicer

        scene = slicer.mrmlScene
        node = scene.GetSingletonNode(self.moduleName, "vtkMRMLScriptedModuleNode")
        if node:
            return node
        node = scene.CreateNodeByClass("vtkMRMLScriptedModuleNode")
        node.UnRegister(None)
        node.SetName(scene.GenerateUniqueName(self.moduleName))
        node.SetAttribute("ModuleName", self.moduleName)
        node.SetSingletonTag(self.moduleName)
        return scene.AddNode(node)


class ScriptedLoadableModuleTest(unittest.TestCase):
    """``delayDisplay`` records its messages instead of showing them."""

    def __init__(self, methodName: str = "runTest") -> None:
        super().__init__(methodName)
        self.displayed: List[str] = []

    def delayDisplay(self, message: str, requestedDelay: int = 100, msec: Optional[int] = None) -> None:
        self.displayed.append(str(message))

    def takeScreenshot(self, name: str, description: str, type: int = -1) -> None:
        pass


# --------------------------------------------------------------------------- parameterNodeWrapper
class Choice:
    def __init__(self, choices: Any) -> None:
        self.choices = list(choices)

    def validate(self, value: Any) -> None:
        if value not in self.choices:
            raise ValueError(f"{value!r} is not one of {self.choices}")


class WithinRange:
    def __init__(self, minimum: Any, maximum: Any) -> None:
        if minimum > maximum:
            raise ValueError(f"WithinRange({minimum}, {maximum}): minimum above maximum")
        self.minimum = minimum
        self.maximum = maximum

    def validate(self, value: Any) -> None:
        if not self.minimum <= value <= self.maximum:
            raise ValueError(f"{value!r} is outside [{self.minimum}, {self.maximum}]")


class Default:
    def __init__(self, value: Any) -> None:
        self.value = value


def _split(hint: Any) -> Tuple[Any, Tuple[Any, ...]]:
    if typing.get_origin(hint) is typing.Annotated:
        base, *extras = typing.get_args(hint)
        return base, tuple(extras)
    return hint, ()


def _is_node_type(base: Any) -> bool:
    import slicer

    return isinstance(base, type) and issubclass(base, slicer.vtkMRMLNode)


def _check_value(name: str, base: Any, extras: Tuple[Any, ...], value: Any) -> None:
    if value is None:
        if not _is_node_type(base):
            raise ValueError(f"{name}: None is only allowed for MRML node parameters")
        return
    if base is float and isinstance(value, int) and not isinstance(value, bool):
        pass
    elif isinstance(base, type) and not isinstance(value, base):
        raise TypeError(f"{name}: {value!r} is not a {base.__name__}")
    for extra in extras:
        if hasattr(extra, "validate"):
            extra.validate(value)


_SUPPORTED_PLAIN_TYPES = (bool, int, float, str)


def parameterNodeWrapper(cls: type) -> type:
    """Evaluate the annotations like Slicer's decorator and wrap a ``vtkMRMLScriptedModuleNode``."""
    import pathlib

    hints = typing.get_type_hints(cls, include_extras=True)
    fields: Dict[str, Tuple[Any, Tuple[Any, ...], Any]] = {}
    for name, hint in hints.items():
        base, extras = _split(hint)
        if not (base in _SUPPORTED_PLAIN_TYPES or base is pathlib.Path or _is_node_type(base)):
            raise TypeError(f"{cls.__name__}.{name}: the stand-in does not know how to store {base!r}")
        if name in cls.__dict__:
            default = cls.__dict__[name]
        elif _is_node_type(base):
            default = None
        elif base is pathlib.Path:
            default = pathlib.Path()
        else:
            default = base()
        _check_value(f"{cls.__name__}.{name} default", base, extras, default)
        fields[name] = (base, extras, default)

    def __init__(self: Any, parameterNode: Any) -> None:
        object.__setattr__(self, "parameterNode", parameterNode)
        object.__setattr__(self, "_values", {name: field[2] for name, field in fields.items()})

    def __getattr__(self: Any, name: str) -> Any:
        values = object.__getattribute__(self, "_values")
        if name in values:
            return values[name]
        raise AttributeError(f"{cls.__name__} has no parameter {name!r}")

    def __setattr__(self: Any, name: str, value: Any) -> None:
        if name not in fields:
            raise AttributeError(f"{cls.__name__} has no parameter {name!r}")
        base, extras, _default = fields[name]
        _check_value(f"{cls.__name__}.{name}", base, extras, value)
        self._values[name] = value
        if not _is_node_type(base):
            self.parameterNode.SetParameter(name, str(value))

    def connectGui(self: Any, gui: Any) -> object:
        return object()

    def disconnectGui(self: Any, tag: Any) -> None:
        pass

    namespace: Dict[str, Any] = {
        "__init__": __init__, "__getattr__": __getattr__, "__setattr__": __setattr__,
        "connectGui": connectGui, "disconnectGui": disconnectGui, "allParameters": fields,
        "__doc__": cls.__doc__, "__module__": cls.__module__,
    }
    return type(cls.__name__, (), namespace)


# --------------------------------------------------------------------------- installation
def stub_modules() -> Dict[str, types.ModuleType]:
    """Fresh stand-in modules by import name."""
    i18n = types.ModuleType("slicer.i18n")
    i18n.tr = tr  # type: ignore[attr-defined]
    i18n.translate = translate  # type: ignore[attr-defined]

    slm = types.ModuleType("slicer.ScriptedLoadableModule")
    for item in (ScriptedLoadableModule, ScriptedLoadableModuleWidget, ScriptedLoadableModuleLogic,
                 ScriptedLoadableModuleTest):
        setattr(slm, item.__name__, item)
    slm.__all__ = [item.__name__ for item in (ScriptedLoadableModule, ScriptedLoadableModuleWidget,  # type: ignore[attr-defined]
                                              ScriptedLoadableModuleLogic, ScriptedLoadableModuleTest)]

    pnw = types.ModuleType("slicer.parameterNodeWrapper")
    for item in (parameterNodeWrapper, Choice, WithinRange, Default):
        setattr(pnw, item.__name__, item)

    return {
        "qt": _PermissiveModule("qt"),
        "ctk": _PermissiveModule("ctk"),
        "slicer.i18n": i18n,
        "slicer.ScriptedLoadableModule": slm,
        "slicer.parameterNodeWrapper": pnw,
    }


def install(setitem: Callable[[Any, str, Any], None], setattr_: Callable[..., None]) -> None:
    """Put the stand-ins in ``sys.modules`` and on the ``slicer`` package through the given
    setters (``monkeypatch.setitem`` / ``monkeypatch.setattr``, so pytest undoes them)."""
    import slicer

    for name, module in stub_modules().items():
        setitem(sys.modules, name, module)
        if name.startswith("slicer."):
            setattr_(slicer, name.split(".", 1)[1], module, raising=False)
