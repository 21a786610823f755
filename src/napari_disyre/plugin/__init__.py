"""The napari side of napari-disyre: reader, writer, sample data and the dock widget.

Everything here only moves data between napari layers and the Qt-free core; no maths. Importing these
modules does not import torch, so napari starts fast.
"""
