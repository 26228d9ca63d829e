"""npe2 sample-data contributions (*File > Open Sample > Exit-wave reconstruction*).

The bundled simulated focal series of :mod:`napari_exitwave.data`, as the same 3-D Image layer
the reader makes for a file (:func:`napari_exitwave._reader.series_layer`).
"""

from __future__ import annotations

from ._reader import series_layer

__all__ = ["sample_series", "sample_series_mos2_graphene_022"]


def sample_series() -> list:
    """npe2 sample data: the bundled simulated MoS2 focal series (3 images, scale in A)."""
    return _sample("mos2", "MoS2 focal series (simulated)")


def sample_series_mos2_graphene_022() -> list:
    """npe2 sample data: simulated MoS2 on graphene at 0.22 A/px (3 images, scale in A)."""
    return _sample("mos2-graphene-022", "MoS2/graphene focal series, 0.22 A/px (simulated)")


def _sample(name: str, layer_name: str) -> list:
    from .data import load_sample_series

    series = load_sample_series(name)
    data, kwargs, kind = series_layer(series, name=layer_name)
    return [(data, kwargs, kind)]
