"""Scene adapters of RTSSBridge: core objects <-> MRML nodes.

Only this package (and the module file) may import ``slicer`` and ``vtk``; it takes the scene
as an argument and never calls ``slicer.app``, ``slicer.util`` loaders, dialogs or Qt.
"""
