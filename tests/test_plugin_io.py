"""The npe2 contributions without a viewer: manifest, reader, writers, sample data.

Everything goes through npe2's own entry points (``npe2.read``/``npe2.write`` and the plugin
manager), i.e. the same path napari takes, so a wrong python_name or signature fails here.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

npe2 = pytest.importorskip("npe2")

from napari_exitwave import _reader, _writer  # noqa: E402
from napari_exitwave.io import read_exit_wave, write_exit_wave_tiff, write_series_tiff  # noqa: E402
from napari_exitwave.peaks import read_peaks_csv  # noqa: E402

PLUGIN = "napari-exitwave"
@pytest.fixture(scope="module", autouse=True)
def pm():
    pm = npe2.PluginManager.instance()
    pm.discover()
    if PLUGIN not in pm._manifests:  # noqa: SLF001 - only to give a clear failure
        pytest.fail("napari-exitwave not discovered: is the package installed (pip install -e .)?")
    return pm


def test_manifest_valid_and_complete(pm):
    mf = pm.get_manifest(PLUGIN)
    c = mf.contributions
    assert {r.command for r in c.readers} == {f"{PLUGIN}.get_reader"}
    assert len(c.writers) == 2 and len(c.widgets) >= 2 and len(c.sample_data) == 2
    # every command's python_name resolves to a callable
    for cmd in c.commands:
        mod, attr = cmd.python_name.split(":")
        module = __import__(mod, fromlist=[attr])
        assert callable(getattr(module, attr)), cmd.python_name
    # the manifest ships inside the package (normal and editable installs)
    import napari_exitwave

    assert (Path(napari_exitwave.__file__).parent / "napari.yaml").is_file()


def test_get_reader_declines_without_raising(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    empty = tmp_path / "empty"
    empty.mkdir()
    for p in [tmp_path / "notes.txt", tmp_path / "missing.dm4", empty, tmp_path / "x.png",
              [], [str(tmp_path / "notes.txt")], 12345, None]:
        assert _reader.get_reader(p) is None
    # a corrupt DM file is accepted by get_reader, and the read itself gives a clear error
    bad = tmp_path / "bad.dm4"
    bad.write_bytes(b"not a dm file at all" * 10)
    reader = _reader.get_reader(str(bad))
    assert reader is not None
    from napari_exitwave.errors import ReaderError

    with pytest.raises(ReaderError, match="bad.dm4"):
        reader(str(bad))


def test_read_series_tiff_through_npe2(tmp_path):
    rng = np.random.default_rng(0)
    imgs = rng.random((3, 24, 32)).astype(np.float32)
    path = write_series_tiff(tmp_path / "series.tif", imgs, sampling=0.105,
                             defocus=[-50.0, 0.0, 50.0])
    layers = npe2.read([str(path)], stack=False, plugin_name=PLUGIN)
    assert len(layers) == 1
    data, kwargs, kind = layers[0]
    assert kind == "image" and data.shape == (3, 24, 32)
    np.testing.assert_array_equal(data, imgs)
    assert kwargs["scale"] == pytest.approx((1.0, 0.105, 0.105))
    assert kwargs["units"] == ("pixel", "angstrom", "angstrom")
    assert kwargs["metadata"]["exitwave"]["defocus"] == [-50.0, 0.0, 50.0]


def test_read_folder_and_exit_wave(tmp_path):
    folder = tmp_path / "series"
    folder.mkdir()
    for i, df in enumerate((-50, 0, 50)):
        write_series_tiff(folder / f"img{i + 1}_df{df}A.tif", np.full((1, 8, 8), i, np.float32),
                          sampling=0.2)
    (data, kwargs, _), = npe2.read([str(folder)], stack=False, plugin_name=PLUGIN)
    assert data.shape == (3, 8, 8) and kwargs["scale"][-1] == pytest.approx(0.2)
    np.testing.assert_array_equal(data[:, 0, 0], [0, 1, 2])
    # an exit wave written by the plugin opens as real + imaginary layers
    wave = (1 + 0.1 * np.arange(64).reshape(8, 8) + 0.5j).astype(np.complex64)
    write_exit_wave_tiff(tmp_path / "ew.tif", wave, 0.1)
    layers = npe2.read([str(tmp_path / "ew.tif")], stack=False, plugin_name=PLUGIN)
    assert [kw["name"] for _, kw, _ in layers] == ["ew [real]", "ew [imag]"]
    np.testing.assert_allclose(layers[0][0], wave.real)
    np.testing.assert_allclose(layers[1][0], wave.imag)
    # both parts share a diverging colormap centred on vacuum (1 for real, 0 for imag)
    (lo_r, hi_r), (lo_i, hi_i) = (kw["contrast_limits"] for _, kw, _ in layers)
    assert (lo_r + hi_r) / 2 == pytest.approx(1.0) and (lo_i + hi_i) / 2 == pytest.approx(0.0)
    assert layers[0][1]["colormap"] == layers[1][1]["colormap"]


def test_dm_samples_open(dm_file):
    path, name = dm_file, dm_file.name
    from rsciio.digitalmicrograph import file_reader

    expected = np.asarray(file_reader(str(path))[0]["data"])
    assert _reader.get_reader(str(path)) is not None
    layers = npe2.read([str(path)], stack=False, plugin_name=PLUGIN)
    (data, kwargs, kind), = layers
    assert kind == "image"
    np.testing.assert_array_equal(data, expected.astype(np.float32))
    assert len(kwargs["scale"]) == data.ndim == expected.ndim
    if "stackbuilder" in name:  # calibrated in um: 0.05998 um = 599.8 A
        assert kwargs["scale"][-1] == pytest.approx(599.829, rel=1e-4)
        assert kwargs["units"][-1] == "angstrom"


def test_incomplete_or_unsuitable_files_raise_reader_errors_in_napari(tmp_path):
    """napari shows the reader's one-line message; never page 1 of a half stack, nor a TypeError."""
    from napari_exitwave.errors import ReaderError

    whole = write_series_tiff(tmp_path / "s.tif", np.random.default_rng(0).random((4, 32, 32)),
                              sampling=0.1)
    half = tmp_path / "half.tif"
    half.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(ReaderError, match="incomplete ImageJ stack"):
        _reader.read_paths(str(half))
    from conftest import DM_DIRS

    other = [d / "other" for d in DM_DIRS if str(d) and (d / "other").is_dir()]
    if not other:
        assert not os.environ.get("CI"), "DM sample files must be found in CI"
        return
    for name, fragment in (("3D_test-8.dm4", "colour pixels"), ("3D_EELS_SI.dm4", "EELS")):
        with pytest.raises(ReaderError, match=fragment):
            _reader.read_paths(str(other[0] / name))


def test_napari_reader_refuses_an_object_dtype_zarr(tmp_path):
    """An untrusted .zarr opened in napari is checked before zarr decodes a chunk."""
    import json

    from napari_exitwave.errors import ReaderError

    store = tmp_path / "evil.zarr"
    store.mkdir()
    (store / ".zarray").write_text(json.dumps({
        "zarr_format": 2, "shape": [2], "chunks": [2], "dtype": "|O", "compressor": None,
        "fill_value": None, "filters": [{"id": "pickle"}], "order": "C"}))
    (store / "0").write_bytes(b"\x80\x05N.")  # a pickle chunk (None): never decoded
    assert _reader.get_reader(str(store)) is not None
    with pytest.raises(ReaderError, match="data type '\\|O'.*not read"):
        npe2.read([str(store)], stack=False, plugin_name=PLUGIN)


def _wave_layers(sampling=0.1):
    yy, xx = np.mgrid[:16, :20]
    wave = (1 + 0.01 * yy + 1j * 0.02 * xx).astype(np.complex64)
    return wave, _reader.exit_wave_layers(wave, sampling, name="ew", metadata={"model": "m"})


@pytest.mark.parametrize("ext", [".tif", ".zarr"])
def test_write_exit_wave_through_npe2(tmp_path, ext):
    wave, layers = _wave_layers()
    out = npe2.write(str(tmp_path / f"out{ext}"), layers, plugin_name=PLUGIN)
    assert out and Path(out[0]).exists()
    back, sampling, meta = read_exit_wave(out[0])
    np.testing.assert_array_equal(back, wave)
    assert sampling == pytest.approx(0.1)
    assert meta.get("model") == "m" or meta.get("metadata", {}).get("model") == "m"
    # from the two float layers alone (no complex array in metadata)
    stripped = [(d, {**kw, "metadata": {"exitwave": {"part": kw["metadata"]["exitwave"]["part"]}}},
                 t) for d, kw, t in layers]
    out = npe2.write(str(tmp_path / f"out2{ext}"), stripped, plugin_name=PLUGIN)
    np.testing.assert_allclose(read_exit_wave(out[0])[0], wave)


def test_write_exit_wave_refuses_other_images(tmp_path):
    with pytest.raises(ValueError, match="real and imaginary"):
        _writer.write_exit_wave(str(tmp_path / "x.tif"),
                                [(np.zeros((4, 4)), {"name": "plain"}, "image")])


def test_write_points_csv_through_npe2(tmp_path):
    import pandas as pd

    pts = np.array([[1.5, 2.25], [3.0, 4.0]])
    feats = pd.DataFrame({"real": [1.1, 0.9], "imag": [0.2, 0.4], "amplitude": [1.2, 1.0],
                          "phase": [0.1, 0.4], "label": ["Mo", ""]})
    out = npe2.write(str(tmp_path / "peaks.csv"),
                     [(pts, {"name": "p", "features": feats, "scale": (0.1, 0.1)}, "points")],
                     plugin_name=PLUGIN)
    tab = read_peaks_csv(out[0])
    np.testing.assert_allclose(tab["y"], pts[:, 0])
    np.testing.assert_allclose(tab["x_A"], pts[:, 1] * 0.1)
    np.testing.assert_allclose(tab["imag"], [0.2, 0.4])
    assert tab["label"].tolist() == ["Mo", ""]


def test_sample_data_contribution(pm):
    from napari_exitwave.data import DATA_DIR, SAMPLE_SERIES

    if not (DATA_DIR / SAMPLE_SERIES).is_file():
        pytest.skip("sample series not generated yet (scripts/make_sample_data.py)")
    contribs = {c.key: c for c in pm.get_manifest(PLUGIN).contributions.sample_data}
    assert set(contribs) == {"mos2_series", "mos2_graphene_022_series"}
    for key, sampling in (("mos2_series", 0.105), ("mos2_graphene_022_series", 0.22)):
        (data, kwargs, kind), = contribs[key].open()
        assert kind == "image" and data.ndim == 3 and data.shape[0] == 3
        assert kwargs["units"][-1] == "angstrom"
        assert kwargs["scale"][-1] == pytest.approx(sampling)


def test_layer_glue_without_viewer():
    """Series from a layer (any length unit), fit checks and the model ensemble, no Qt."""
    from napari.layers import Image

    from napari_exitwave._layers import check_fit, ensemble, layer_sampling, series_from_layer
    from napari_exitwave.inference import ModelCard

    # 32 px: the smallest frame a network takes (validate.MIN_FRAME)
    imgs = np.random.default_rng(0).random((3, 32, 32)).astype(np.float32)
    nm = Image(imgs, scale=(1, 0.0105, 0.0105), units=("pixel", "nanometer", "nanometer"))
    assert layer_sampling(nm) == pytest.approx(0.105)
    assert layer_sampling(Image(imgs)) is None  # pixels: unknown
    card = ModelCard(name="m", onnx_file="m.onnx", sampling=0.105, n_images=3)
    assert check_fit(series_from_layer(nm), card).ok
    two = series_from_layer(Image(imgs[:2]), sampling=0.105)
    assert "expects 3 images" in check_fit(two, card).errors[0]
    assert "single 2-D image" in check_fit(series_from_layer(Image(imgs[0])), card).errors[0]
    far = check_fit(series_from_layer(nm, sampling=0.3), card)
    assert far.ok and "2.9x coarser" in far.warnings[0]
    gs = check_fit(series_from_layer(nm), method="gs", defocus=[-50, 0])
    assert "enter 3 defocus values" in gs.errors[0]
    assert check_fit(series_from_layer(nm), method="gs", defocus=[-50, 0, 50]).ok
    a = np.ones((4, 4), np.complex64)
    mean, std = ensemble([a, a + 0.2j])
    np.testing.assert_allclose(mean, 1 + 0.1j)
    np.testing.assert_allclose(std, 0.1, rtol=1e-6)
    assert ensemble([a])[1] is None
