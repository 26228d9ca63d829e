"""Readers and writers of napari_exitwave.io: DM samples, TIFF/OME/ImageJ, folders, exit waves."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_exitwave.errors import IncompleteFileError, ReaderError
from napari_exitwave.io import (FocalSeries, natural_sort_key, read_exit_wave, read_image,
                                read_series, to_angstrom, write_exit_wave_tiff,
                                write_exit_wave_zarr, write_series_tiff)

DM_DIR = Path(os.environ.get("NAPARI_EXITWAVE_DM_SAMPLES",
                             Path(__file__).resolve().parents[2] / "shared" / "dm-samples"))
# In CI (shared/ beside the clone) a missing folder must fail, not skip.
needs_dm = pytest.mark.skipif(not DM_DIR.is_dir() and not os.environ.get("CI"), reason=f"DM sample files not found at {DM_DIR}")


# ---------------------------------------------------------------------------------------------
# DigitalMicrograph samples: what rosettasciio returns, as FocalSeries


@needs_dm
@pytest.mark.parametrize("name", ["2D_test-1.dm3", "2D_test-1.dm4"])
def test_dm_2d_image_is_not_a_series(name):
    with pytest.raises(ReaderError, match="single 2-D image.*stack"):
        read_series(DM_DIR / name)
    s = read_series(DM_DIR / name, allow_single=True)
    assert s.images.shape == (1, 2, 2) and s.images.dtype == np.float32
    np.testing.assert_array_equal(s.images[0], [[1, 2], [3, 4]])
    # uncalibrated: rosettasciio gives scale 1 and no unit
    assert s.sampling is None and s.units == "px" and s.defocus is None
    assert s.metadata["format"] == "DigitalMicrograph"


@needs_dm
@pytest.mark.parametrize("name", ["3D_test-1.dm4", "3D_test-2.dm3"])
def test_dm_3d_stacks(name):
    s = read_series(DM_DIR / name)
    assert s.images.shape == (2, 2, 2)
    np.testing.assert_array_equal(s.images, np.arange(1, 9).reshape(2, 2, 2))
    assert s.sampling is None and s.units == "px"
    assert s.metadata["stack_axis"]["name"] == "z"


@needs_dm
def test_dm_stackbuilder_calibration_in_um():
    s = read_series(DM_DIR / "test_stackbuilder_imagestack.dm3")
    assert s.images.shape == (3, 2, 16)
    # rosettasciio: x/y scale 0.05998290330171585 in 'µm' -> A
    assert s.sampling == pytest.approx(0.05998290330171585e4, rel=1e-12)
    assert s.units == "Å"
    assert s.metadata["original_units"] == "µm"
    assert s.metadata["original_scale"] == pytest.approx(0.05998290330171585)
    assert s.metadata["energy"] == 200000.0  # Microscope Info/Voltage
    assert s.images[0, 0, 0] == 606491.0 and s.images.max() == 640661.0
    assert s.defocus is None


@needs_dm
@pytest.mark.parametrize("name, keep", [("3D_test-1.dm4", 10000), ("3D_test-2.dm3", 100),
                                        ("test_stackbuilder_imagestack.dm3", 24000)])
def test_truncated_dm_gives_reader_error(tmp_path, name, keep):
    bad = tmp_path / name
    bad.write_bytes((DM_DIR / name).read_bytes()[:keep])
    with pytest.raises(IncompleteFileError, match="truncated: its header declares"):
        read_series(bad)


def test_not_a_dm_file(tmp_path):
    p = tmp_path / "x.dm4"
    p.write_bytes(b"this is not a DigitalMicrograph file" * 10)
    with pytest.raises(ReaderError, match="DigitalMicrograph"):
        read_series(p)


# ---------------------------------------------------------------------------------------------
# units


@pytest.mark.parametrize("scale, unit, expected", [
    (0.0105, "nm", 0.105), (1.05e-5, "µm", 0.105), (1.05e-5, "\u03bcm", 0.105),
    (1.05e-5, "micron", 0.105), (10.5, "pm", 0.105), (0.105, "Å", 0.105), (0.105, "A", 0.105),
    (1.05e-11, "m", 0.105), (1.0, "", None), (1.0, "px", None), (1.0, "parsec", None)])
def test_to_angstrom(scale, unit, expected):
    got = to_angstrom(scale, unit)
    if expected is None:
        assert got is None
    else:
        assert got == pytest.approx(expected, rel=1e-12)


def test_reciprocal_units_are_rejected():
    with pytest.raises(ReaderError, match="reciprocal"):
        to_angstrom(0.01, "1/nm")


def test_natural_sort():
    names = ["img10.tif", "img2.tif", "img1.tif"]
    assert sorted(names, key=natural_sort_key) == ["img1.tif", "img2.tif", "img10.tif"]


# ---------------------------------------------------------------------------------------------
# TIFF


def _stack(n=3, ny=20, nx=24, seed=0):
    return (np.random.default_rng(seed).random((n, ny, nx)) + 1).astype(np.float32)


def test_series_tiff_round_trip(tmp_path):
    a = _stack()
    p = write_series_tiff(tmp_path / "s.tif", a, sampling=0.105, defocus=[-50, 0, 50.5],
                          metadata={"note": "x"})
    s = read_series(p)
    np.testing.assert_array_equal(s.images, a)
    assert s.sampling == 0.105 and s.units == "Å"
    assert s.defocus == [-50.0, 0.0, 50.5]
    assert s.metadata["note"] == "x"
    # Fiji sees an ImageJ stack calibrated in nm, slices labelled with the defocus
    with tifffile.TiffFile(p) as tif:
        assert tif.is_imagej and tif.imagej_metadata["unit"] == "nm"
        assert tif.imagej_metadata["Labels"][0] == "defocus=-50 A"
        num, den = tif.pages[0].tags["XResolution"].value
        assert den / num * 10 == pytest.approx(0.105, rel=1e-6)


def test_series_tiff_without_calibration(tmp_path):
    a = _stack()
    write_series_tiff(tmp_path / "s.tif", a)
    s = read_series(tmp_path / "s.tif")
    assert s.sampling is None and s.units == "px" and s.defocus is None


@pytest.mark.parametrize("unit, per_unit, expected", [
    ("nm", 1 / 0.0105, 0.105), ("micron", 1 / 1.05e-5, 0.105), ("\\u00B5m", 1 / 2e-5, 0.2)])
def test_imagej_tiff_calibration(tmp_path, unit, per_unit, expected):
    p = tmp_path / "ij.tif"
    tifffile.imwrite(p, _stack(), imagej=True, resolution=(per_unit, per_unit),
                     metadata={"axes": "ZYX", "unit": unit})
    s = read_series(p)
    assert s.sampling == pytest.approx(expected, rel=1e-5)
    assert s.images.shape == (3, 20, 24)


def test_ome_tiff_calibration(tmp_path):
    p = tmp_path / "s.ome.tif"
    tifffile.imwrite(p, _stack(4), ome=True,
                     metadata={"axes": "ZYX", "PhysicalSizeX": 0.0105, "PhysicalSizeXUnit": "nm",
                               "PhysicalSizeY": 0.0105, "PhysicalSizeYUnit": "nm"})
    s = read_series(p)
    assert s.n_images == 4 and s.sampling == pytest.approx(0.105)
    assert s.metadata["format"] == "OME-TIFF"


def test_plain_tiff_stack_and_json_metadata(tmp_path):
    p = tmp_path / "plain.tif"
    tifffile.imwrite(p, _stack().astype(np.uint16))
    s = read_series(p)
    assert s.images.shape == (3, 20, 24) and s.sampling is None and s.images.dtype == np.float32
    # a shaped (JSON) description with our keys
    q = tmp_path / "shaped.tif"
    tifffile.imwrite(q, _stack(), metadata={"sampling": 0.2, "defocus": [-10, 0, 10]})
    s = read_series(q)
    assert s.sampling == 0.2 and s.defocus == [-10.0, 0.0, 10.0]


def test_tiff_errors(tmp_path):
    one = tmp_path / "one.tif"
    tifffile.imwrite(one, _stack(1)[0])
    with pytest.raises(ReaderError, match="single 2-D image"):
        read_series(one)
    assert read_image(one).images.shape == (1, 20, 24)
    rgb = tmp_path / "rgb.tif"
    tifffile.imwrite(rgb, (np.random.rand(8, 8, 3) * 255).astype(np.uint8), photometric="rgb")
    with pytest.raises(ReaderError, match="RGB"):
        read_series(rgb)
    good = tmp_path / "good.tif"
    write_series_tiff(good, _stack(3, 64, 64), 0.1)
    trunc = tmp_path / "trunc.tif"
    trunc.write_bytes(good.read_bytes()[:300])
    with pytest.raises(ReaderError, match="truncated|TIFF"):
        read_series(trunc)
    empty = tmp_path / "empty.tif"
    empty.write_bytes(b"")
    with pytest.raises(ReaderError, match="empty"):
        read_series(empty)
    with pytest.raises(ReaderError, match="does not exist"):
        read_series(tmp_path / "missing.tif")
    other = tmp_path / "x.png"
    other.write_bytes(b"\x89PNG")
    with pytest.raises(ReaderError, match="unsupported"):
        read_series(other)


def test_nan_pixels_are_reported(tmp_path):
    a = _stack()
    a[1, 3, 4] = np.nan
    a[1, 5, 5] = np.inf
    write_series_tiff(tmp_path / "nan.tif", a, 0.1)
    with pytest.raises(ReaderError, match=r"NaN.*image 2: 2"):
        read_series(tmp_path / "nan.tif")
    s = read_series(tmp_path / "nan.tif", allow_nonfinite=True)
    assert np.isnan(s.images[1, 3, 4])


# ---------------------------------------------------------------------------------------------
# folders of single images


def test_folder_series_natural_order_and_defocus_from_names(tmp_path):
    d = tmp_path / "series"
    d.mkdir()
    values = {"s10_df+5nm.tif": 3.0, "s1_df-5nm.tif": 1.0, "s2_df0nm.tif": 2.0}
    for name, v in values.items():
        im = np.full((16, 12), v, np.float32) + np.eye(16, 12, dtype=np.float32)
        tifffile.imwrite(d / name, im, imagej=True, resolution=(100.0, 100.0),
                         metadata={"unit": "nm"})
    (d / "notes.txt").write_text("ignored")
    s = read_series(d)
    assert s.n_images == 3
    np.testing.assert_array_equal(s.images[:, 0, 1], [1.0, 2.0, 3.0])  # img2 before img10
    assert s.metadata["files"] == ["s1_df-5nm.tif", "s2_df0nm.tif", "s10_df+5nm.tif"]
    assert s.defocus == [-50.0, 0.0, 50.0]  # nm -> A
    assert s.sampling == pytest.approx(0.1)  # 100 px/nm


def test_folder_series_in_defocus_order_when_names_sort_otherwise(tmp_path):
    """As text, img_df-50 < img_df0 < img_df50 does not hold ("-" vs digits): defocus decides."""
    d = tmp_path / "series"
    d.mkdir()
    values = {"img_df50A.tif": 3.0, "img_df-50A.tif": 1.0, "img_df0A.tif": 2.0}
    for name, v in values.items():
        tifffile.imwrite(d / name, np.full((8, 8), v, np.float32))
    s = read_series(d)
    assert s.defocus == [-50.0, 0.0, 50.0]
    np.testing.assert_array_equal(s.images[:, 0, 0], [1.0, 2.0, 3.0])
    assert s.metadata["files"] == ["img_df-50A.tif", "img_df0A.tif", "img_df50A.tif"]


def test_folder_series_defocus_from_our_metadata_and_errors(tmp_path):
    d = tmp_path / "ours"
    d.mkdir()
    for i, df in enumerate([-40, 10, 60]):
        write_series_tiff(d / f"a{i}.tif", _stack(1, seed=i), 0.1, [df])
    s = read_series(d)
    assert s.defocus == [-40.0, 10.0, 60.0] and s.sampling == 0.1
    # differing sizes
    write_series_tiff(d / "a3.tif", _stack(1, 10, 10), 0.1, [70])
    with pytest.raises(ReaderError, match="differ in size"):
        read_series(d)
    # a stack inside a folder series
    e = tmp_path / "stacked"
    e.mkdir()
    write_series_tiff(e / "a.tif", _stack(2), 0.1)
    with pytest.raises(ReaderError, match="single 2-D images"):
        read_series(e)
    f = tmp_path / "empty"
    f.mkdir()
    with pytest.raises(ReaderError, match="no images"):
        read_series(f)
    g = tmp_path / "mixed"
    g.mkdir()
    write_series_tiff(g / "a.tif", _stack(1), 0.1)
    write_series_tiff(g / "b.tif", _stack(1), 0.2)
    with pytest.raises(ReaderError, match="different pixel sizes"):
        read_series(g)


def test_focal_series_dataclass():
    s = FocalSeries(np.ones((2, 4, 4), np.float64), sampling=0.1, defocus=[1, 2])
    assert s.images.dtype == np.float32 and s.units == "Å" and s.shape == (4, 4)
    with pytest.raises(ValueError):
        FocalSeries(np.ones((2, 4, 4)), defocus=[1, 2, 3])
    with pytest.raises(ValueError):
        FocalSeries(np.ones((2, 4, 4)), sampling=-1)


# ---------------------------------------------------------------------------------------------
# exit waves


def _wave(ny=20, nx=24, seed=1):
    rng = np.random.default_rng(seed)
    wave = 1 + 0.1 * rng.normal(size=(ny, nx)) + 0.1j * rng.normal(size=(ny, nx))
    return wave.astype(np.complex64)


def test_exit_wave_tiff_round_trip(tmp_path):
    w = _wave()
    meta = {"model": "mos2", "timings": {"inference": np.float64(0.5)}, "shifts": np.zeros((3, 2))}
    p = write_exit_wave_tiff(tmp_path / "w.tif", w, 0.105, meta)
    got, sampling, m = read_exit_wave(p)
    assert got.dtype == np.complex64
    np.testing.assert_array_equal(got, w)
    assert sampling == 0.105 and m["model"] == "mos2" and m["timings"]["inference"] == 0.5
    with tifffile.TiffFile(p) as tif:  # two float32 channels that Fiji opens, calibrated in nm
        assert tif.series[0].axes == "CYX" and tif.series[0].dtype == np.float32
        assert tif.imagej_metadata["Labels"] == ["real", "imag"]


def test_exit_wave_zarr_round_trip(tmp_path):
    import zarr

    w = _wave(40, 30)
    p = write_exit_wave_zarr(tmp_path / "w.zarr", w, 0.2, {"method": "gs"}, chunks=16)
    arr = zarr.open_array(str(p), mode="r")
    assert arr.dtype == np.complex64 and arr.attrs["sampling"] == 0.2
    got, sampling, m = read_exit_wave(p)
    np.testing.assert_array_equal(got, w)
    assert sampling == 0.2 and m == {"method": "gs"}


def test_read_exit_wave_rejects_a_series(tmp_path):
    write_series_tiff(tmp_path / "s.tif", _stack(), 0.1)
    with pytest.raises(ReaderError, match="not an exit wave"):
        read_exit_wave(tmp_path / "s.tif")
    w = tmp_path / "w.tif"
    write_exit_wave_tiff(w, _wave(), 0.1)
    with pytest.raises(ReaderError, match="holds an exit wave"):
        read_series(w)


# ---------------------------------------------------------------------------------------------
# bundled sample data


def test_sample_data_loaders():
    from napari_exitwave import data

    assert (data.DATA_DIR / data.SAMPLE_SERIES).is_file(), "bundled sample data missing"
    s = data.load_sample_series()
    params = data.load_sample_parameters()
    assert s.source == "sample" and s.images.shape == (3, 256, 256)
    assert s.sampling == pytest.approx(0.105) and s.units == "Å"
    assert s.defocus == [p["defocus"] for p in params["microscope"]]
    assert np.all(np.diff(s.defocus) > 0)  # increasing, abTEM convention
    wave, sampling, meta = data.load_sample_exit_wave()
    assert wave.dtype == np.complex64 and wave.shape == (256, 256) and sampling == s.sampling
    cols = data.load_sample_columns()
    assert set(cols["label"]) <= {"Mo", "S2", "S"} and len(cols["x_A"]) > 10
    np.testing.assert_allclose(cols["row"] * sampling, cols["y_A"], atol=1e-3)
    # columns scatter the wave: |psi - 1| is larger on the Mo columns than on average
    r = np.clip(np.round(cols["row"]).astype(int), 0, 255)
    c = np.clip(np.round(cols["col"]).astype(int), 0, 255)
    mo = cols["label"] == "Mo"
    assert np.abs(wave[r[mo], c[mo]] - 1).mean() > 2 * np.abs(wave - 1).mean()


def test_low_magnification_sample():
    """The 0.22 A/px MoS2-on-graphene sample: its own pixel size, graphene columns, truth."""
    from napari_exitwave import data

    s = data.load_sample_series("mos2-graphene-022")
    assert s.source == "sample:mos2-graphene-022" and s.images.shape == (3, 128, 128)
    assert s.sampling == pytest.approx(0.22) and np.all(np.diff(s.defocus) > 0)
    wave, sampling, _ = data.load_sample_exit_wave("mos2-graphene-022")
    assert wave.shape == (128, 128) and sampling == pytest.approx(0.22)
    cols = data.load_sample_columns("mos2-graphene-022")
    assert {"Mo", "C"} <= set(cols["label"])
    assert data.sample_for_sampling(0.22) == "mos2-graphene-022"
    assert data.sample_for_sampling(0.1) == "mos2"
    with pytest.raises(ValueError, match="bundled: mos2"):
        data.load_sample_series("graphene")


# ---------------------------------------------------------------------------------------------
# incomplete and unsuitable files (issue 13, items 5 and 7)


def _pages_tiff(path, a):
    """A plain multi-page TIFF written page by page, as acquisition software does."""
    with tifffile.TiffWriter(path) as w:
        for im in a:
            w.write(im, contiguous=False, metadata=None)
    with tifffile.TiffFile(path) as tif:
        return [(p.offset, p.dataoffsets[0]) for p in tif.pages]


def test_truncated_multipage_tiff_is_an_error_not_a_shorter_series(tmp_path):
    a = _stack(4, 32, 32)
    whole = tmp_path / "whole.tif"
    pages = _pages_tiff(whole, a)
    assert read_series(whole).n_images == 4
    data = whole.read_bytes()
    cut = tmp_path / "cut.tif"
    # cut after page 3: tifffile alone would read a valid 3-image series
    cut.write_bytes(data[:pages[3][0]])
    with tifffile.TiffFile(cut) as tif:
        assert tif.series[0].shape[0] == 3
    with pytest.raises(IncompleteFileError,
                       match="truncated: the file .* ends before page 4, which page 3 links to"):
        read_series(cut)
    # cut inside the data of page 4
    cut.write_bytes(data[:pages[3][1] + 100])
    with pytest.raises(IncompleteFileError, match="truncated: the data of page 4 of 4"):
        read_series(cut)
    # no cut of a file being written reads as a series: every cut is "incomplete" (which live
    # watchers retry), wherever it falls (header, tag list, page chain, data)
    for n in list(range(1, len(data), 97)) + [3, 9, 100, pages[1][0] + 5]:
        cut.write_bytes(data[:n])
        with pytest.raises(IncompleteFileError):
            read_series(cut, allow_single=True)


def test_half_an_imagej_stack_is_an_error_not_a_single_image(tmp_path):
    a = _stack(4, 32, 32)
    p = tmp_path / "ij.tif"
    write_series_tiff(p, a, 0.1)
    data = p.read_bytes()
    half = tmp_path / "half.tif"
    half.write_bytes(data[:len(data) // 2])
    with tifffile.TiffFile(half) as tif:  # what tifffile makes of it: one 2-D image
        assert tif.series[0].ndim == 2
    for allow_single in (False, True):  # the napari reader accepts single images: not this one
        with pytest.raises(IncompleteFileError, match="incomplete ImageJ stack: its header "
                                                      "declares 4 images, the file holds 1"):
            read_series(half, allow_single=allow_single)


def test_ome_tiff_missing_its_last_page_or_description(tmp_path):
    p = tmp_path / "s.ome.tif"
    tifffile.imwrite(p, _stack(4, 32, 32), ome=True)
    with tifffile.TiffFile(p) as tif:
        last = tif.pages[3].offset
    data = p.read_bytes()
    cut = tmp_path / "cut.ome.tif"
    cut.write_bytes(data[:last])
    with pytest.raises(ReaderError, match="truncated|incomplete"):
        read_series(cut)
    cut.write_bytes(data[:-1])  # the OME-XML (stored last) loses its final byte
    with pytest.raises(IncompleteFileError, match="ends in a tag value of page 1"):
        read_series(cut)


def test_tiff_with_pages_of_different_shapes_says_so(tmp_path):
    p = tmp_path / "two.tif"
    a = _stack(2, 32, 32)
    with tifffile.TiffWriter(p) as w:
        w.write(a[0], metadata=None)
        w.write(a[1, :16], metadata=None)
    with pytest.raises(ReaderError,
                       match=r"2 image series of different shapes \(32 x 32, 16 x 32\)"):
        read_series(p)


OTHER = DM_DIR / "other"


@needs_dm
def test_rgba_dm_stack_is_a_reader_error():
    with pytest.raises(ReaderError, match=r"colour pixels \(R, G, B, A\).*grayscale"):
        read_series(OTHER / "3D_test-8.dm4")


@needs_dm
def test_eels_spectrum_image_is_refused():
    with pytest.raises(ReaderError, match="'EELS' signal.*not a focal series"):
        read_series(OTHER / "3D_EELS_SI.dm4")


def test_stack_axis_in_energy_units_is_refused_whatever_the_signal_type():
    """The check is on the axis, not on one file: a crafted rosettasciio signal dict."""
    from napari_exitwave._dm import _refuse_non_images

    data = np.zeros((300, 4, 4), np.float32)
    axes = [{"name": "E", "units": "keV"}, {"name": "y"}, {"name": "x"}]
    with pytest.raises(ReaderError, match="stack axis 'E' runs in keV.*spectrum image"):
        _refuse_non_images("x.dm4", data, axes, {"Signal": {"signal_type": ""}})
    axes[0]["units"] = "nm"  # a defocus axis is fine
    _refuse_non_images("x.dm4", data, axes, {"Signal": {"signal_type": ""}})


@needs_dm
def test_dm_saved_tiff_gets_rosettasciio_calibration():
    s = read_series(OTHER / "test_loading_image_saved_with_DM_stack.tif")
    assert s.images.shape == (2, 68, 68)
    # DM's private tags: width 0.168674 um/px (height 1.68674 um/px), tifffile finds none
    assert s.sampling == pytest.approx(0.16867400705814362e4, rel=1e-9)
    assert s.metadata["original_units"] == "µm" and s.metadata["calibration"] == "rosettasciio"
    assert s.metadata["anisotropic_sampling"][0] == pytest.approx(1.6867400407791138e4)


def test_beam_energy_comes_from_rosettasciio_mapping_not_any_voltage_key():
    """A 'Voltage' elsewhere in the tag tree (a detector bias) is not the beam energy."""
    from napari_exitwave._dm import mapped_metadata

    tags = "ImageList.TagGroup0.ImageTags"
    sig = {"metadata": {"General": {"title": "t"}},
           "original_metadata": {"ImageList": {"TagGroup0": {"ImageTags": {
               "Detector": {"Voltage": 900.0},
               "Microscope Info": {"Voltage": 300000.0}}}}},
           "mapping": {f"{tags}.Microscope Info.Voltage":
                       ("Acquisition_instrument.TEM.beam_energy", lambda v: v / 1e3),
                       f"{tags}.Missing": ("General.x", None)}}
    meta = mapped_metadata(sig)
    assert meta["Acquisition_instrument"]["TEM"]["beam_energy"] == 300.0
    assert meta["General"] == {"title": "t"}
    del sig["original_metadata"]["ImageList"]["TagGroup0"]["ImageTags"]["Microscope Info"]
    assert "Acquisition_instrument" not in mapped_metadata(sig)


# ---------------------------------------------------------------------------------------------
# untrusted Zarr stores (issue 13, item 12)


def _crafted_pickle_zarr(path, filters, marker):
    """A v2 Zarr array whose chunk is a pickle that creates ``marker`` when unpickled."""
    import json
    import pickle

    path.mkdir()
    (path / ".zarray").write_text(json.dumps({
        "zarr_format": 2, "shape": [2], "chunks": [2], "dtype": "|O", "compressor": None,
        "fill_value": None, "filters": filters, "order": "C"}))

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    obj = np.empty(2, dtype=object)
    obj[0], obj[1] = Payload(), 1
    (path / "0").write_bytes(pickle.dumps(obj))


@pytest.mark.parametrize("filters", [[{"id": "pickle"}],
                                     [{"id": "vlen-utf8"}, {"id": "pickle"}]])
def test_pickled_zarr_is_refused_before_reading(tmp_path, filters, monkeypatch):
    import numcodecs.pickles

    # even where this numcodecs would unpickle (opt-in set), our check comes first
    monkeypatch.setattr(numcodecs.pickles, "ALLOW_UNSAFE_PICKLE_DECODE", True)
    marker = tmp_path / "PWNED"
    store = tmp_path / "evil.zarr"
    _crafted_pickle_zarr(store, filters, marker)
    with pytest.raises(ReaderError, match="not a numeric exit wave.*not read"):
        read_exit_wave(store)
    assert not marker.exists()


def test_installed_numcodecs_refuses_to_unpickle(tmp_path):
    """The dependency floor (numcodecs >= 0.16.6) is itself safe: zarr alone does not unpickle."""
    import zarr

    marker = tmp_path / "PWNED"
    store = tmp_path / "evil.zarr"
    _crafted_pickle_zarr(store, [{"id": "vlen-utf8"}, {"id": "pickle"}], marker)
    with pytest.raises(Exception, match="(?i)pickle"):
        zarr.open_array(str(store), mode="r")[...]
    assert not marker.exists()


def test_zarr_of_other_types_and_groups_is_refused(tmp_path):
    import zarr

    ints = tmp_path / "ints.zarr"
    zarr.open_array(str(ints), mode="w", shape=(4, 4), dtype="i4")[...] = 1
    with pytest.raises(ReaderError, match="data type 'int32'"):
        read_exit_wave(ints)
    grp = tmp_path / "grp.zarr"
    zarr.open_group(str(grp), mode="w")
    with pytest.raises(ReaderError, match="Zarr group"):
        read_exit_wave(grp)
    (tmp_path / "none.zarr").mkdir()
    with pytest.raises(ReaderError, match="not a Zarr array"):
        read_exit_wave(tmp_path / "none.zarr")


def test_zarr_with_a_pickle_codec_on_numbers_is_refused(tmp_path):
    import json

    store = tmp_path / "w.zarr"
    store.mkdir()
    (store / ".zarray").write_text(json.dumps({
        "zarr_format": 2, "shape": [4, 4], "chunks": [4, 4], "dtype": "<c8", "compressor": None,
        "fill_value": 0, "filters": [{"id": "pickle"}], "order": "C"}))
    with pytest.raises(ReaderError, match="codec 'pickle'"):
        read_exit_wave(store)
