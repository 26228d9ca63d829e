"""napari-exitwave: exit-wave reconstruction from short HRTEM focal series.

The core modules (``physics``, ``io``, ``align``, ``inference``, ``peaks``, ``argand``,
``traditional``, ...) need only numpy/scipy/scikit-image/onnxruntime; the Qt layer lives in
``napari_exitwave._qt``.
"""

__version__ = "0.1.0"
