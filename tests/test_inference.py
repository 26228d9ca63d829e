"""ONNX inference: model cards, hashes, device reporting, padding and tiling (tiny analytic nets)."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("onnx")  # only to build the tiny test networks

from onnx_helpers import make_conv_model, reference_output  # noqa: E402

from napari_exitwave.errors import (ModelError, ReconstructionCancelled,  # noqa: E402
                                    SeriesMismatchError)
from napari_exitwave.inference import (ModelCard, OnnxReconstructor, auto_tile,  # noqa: E402
                                       find_model, get_reconstructor, list_models, sha256_file,
                                       tile_starts)
from napari_exitwave.model_cards import external_data_files  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    path, kernel = make_conv_model(d / "tiny.onnx", n_images=3, n_pool=4)
    return d, path, kernel


def _x(shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def test_untiled_prediction_matches_the_analytic_network(tiny):
    d, path, kernel = tiny
    rec = OnnxReconstructor(d / "tiny.json", providers="cpu")
    assert rec.device == "CPU" and rec.providers == ["CPUExecutionProvider"]
    assert rec.card.size_multiple == 16 and rec.n_images == 3
    x = _x((3, 64, 48))  # already a multiple of 16: no padding
    out = rec.predict(x)
    assert out.dtype == np.complex64 and out.shape == (64, 48)
    np.testing.assert_allclose(out, reference_output(x, kernel), atol=1e-5)


def test_padding_to_size_multiple_and_crop_back(tiny):
    d, path, kernel = tiny
    rec = OnnxReconstructor(d / "tiny.json")
    x = _x((3, 100, 90))
    out = rec.predict(x)
    assert out.shape == (100, 90)
    padded = np.pad(x, ((0, 0), (0, 12), (0, 6)), mode="reflect")  # to 112 x 96, bottom/right
    np.testing.assert_allclose(out, reference_output(padded, kernel)[:100, :90], atol=1e-5)
    # without padding the pooling network cannot run on 100 x 90: the padding is what makes it work
    with pytest.raises(ModelError, match="returned shape|failed"):
        rec._run(np.moveaxis(x, 0, -1)[None])


@pytest.mark.parametrize("tile, overlap", [(128, 64), (256, 32), (96, 40)])
def test_tiling_equals_untiled(tiny, tile, overlap):
    d, path, kernel = tiny
    rec = OnnxReconstructor(d / "tiny.json")
    x = _x((3, 300, 230), seed=1)
    full = rec.predict(x, tile=4096)
    seen = []
    tiled = rec.predict(x, tile=tile, overlap=overlap, progress=lambda f, m: seen.append((f, m)))
    assert seen[-1][0] == 1.0 and seen[-1][1].startswith("inference tile")
    assert int(seen[-1][1].split("/")[-1]) > 1  # really tiled
    assert all(b[0] >= a[0] for a, b in zip(seen, seen[1:]))
    np.testing.assert_allclose(tiled, full, atol=1e-5)


def test_tiles_without_overlap_show_seams(tiny):
    """The blending is what makes tiles agree: with no overlap the tile edges differ."""
    d, path, kernel = tiny
    rec = OnnxReconstructor(d / "tiny.json")
    x = _x((3, 300, 230), seed=1)
    assert np.abs(rec.predict(x, tile=128, overlap=0) - rec.predict(x, tile=4096)).max() > 0.1


def test_large_frame_in_tiles(tiny):
    d, path, kernel = tiny
    rec = OnnxReconstructor(d / "tiny.json")
    x = _x((3, 1536, 1536), seed=2)
    out = rec.predict(x, tile=512, overlap=64)
    assert out.shape == (1536, 1536)
    ys = slice(700, 760)
    ref = reference_output(x[:, 640:832, 640:832], kernel)[60:120, 60:120]  # an interior window
    np.testing.assert_allclose(out[ys, ys], ref, atol=1e-5)


def test_tile_starts_cover_the_frame():
    for n, t, o in [(1000, 256, 64), (256, 256, 64), (257, 256, 64), (512, 128, 0)]:
        starts = tile_starts(n, t, o)
        assert starts[0] == 0 and starts[-1] + min(t, n) == n
        assert all(b - a <= t - o for a, b in zip(starts, starts[1:]))


def test_wrong_number_of_images_and_cancel(tiny):
    d, path, kernel = tiny
    rec = OnnxReconstructor(d / "tiny.json")
    with pytest.raises(SeriesMismatchError, match="expects 3 images, the series has 2"):
        rec.predict(_x((2, 32, 32)))
    with pytest.raises(ReconstructionCancelled):
        rec.predict(_x((3, 300, 300)), tile=128, cancel=lambda: True)


# ---------------------------------------------------------------------------------------------
# cards, hashes, corrupt files


def test_card_round_trip_keeps_unknown_keys(tmp_path, tiny):
    d, path, kernel = tiny
    card = ModelCard.load(d / "tiny.json")
    assert card.onnx_path == path.resolve() and card.sampling == 0.1 and card.defocus_step == 50
    card.extra["future_key"] = {"a": 1}
    card.metrics = {"rmse_real": np.float64(0.0062)}
    out = card.save(tmp_path / "copy.json")
    again = json.loads(out.read_text())
    assert again["future_key"] == {"a": 1} and again["metrics"]["rmse_real"] == 0.0062
    assert "path" not in again and "extra" not in again
    assert ModelCard.load(out).to_dict() == card.to_dict()


def test_hash_mismatch_and_corrupt_onnx(tmp_path):
    path, _ = make_conv_model(tmp_path / "m.onnx", name="m")
    good = path.read_bytes()
    path.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
    with pytest.raises(ModelError, match="does not match its card"):
        OnnxReconstructor(tmp_path / "m.json")
    # the same bytes, card updated: ONNX Runtime itself refuses the file
    path.write_bytes(good[: len(good) // 2])
    card = ModelCard.load(tmp_path / "m.json")
    card.update_sha256()
    card.save()
    with pytest.raises(ModelError, match="could not load model 'm'.*truncated or not an ONNX"):
        OnnxReconstructor(tmp_path / "m.json")
    path.unlink()
    with pytest.raises(ModelError, match="missing"):
        OnnxReconstructor(tmp_path / "m.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ModelError, match="not valid JSON"):
        ModelCard.load(tmp_path / "bad.json")
    (tmp_path / "half.json").write_text(json.dumps({"name": "x"}))
    with pytest.raises(ModelError, match="onnx_file"):
        ModelCard.load(tmp_path / "half.json")


def test_list_and_find_models(tmp_path, monkeypatch):
    a = tmp_path / "a"
    b = tmp_path / "b"
    a.mkdir()
    b.mkdir()
    make_conv_model(a / "one.onnx", name="one")
    make_conv_model(b / "two.onnx", name="two", n_images=2)
    (b / "broken.json").write_text("{")
    with pytest.warns(UserWarning, match="skipping model card"):
        found = list_models([a, b])
    assert sorted(found) == ["one", "two"] and found["two"].n_images == 2
    monkeypatch.setenv("NAPARI_EXITWAVE_MODELS", str(a))
    assert "one" in list_models()
    assert find_model("one").name == "one"
    assert find_model(a / "one.onnx").name == "one"  # the card next to the file
    with pytest.raises(ModelError, match="no model named 'nope'"):
        find_model("nope")
    # an ONNX file without a card: n_images from the network's static input shape
    bare = tmp_path / "bare.onnx"
    bare.write_bytes((b / "two.onnx").read_bytes())
    card = find_model(bare)
    assert card.n_images == 2 and card.sampling is None and card.sha256 is None
    assert OnnxReconstructor(bare).predict(_x((2, 32, 32))).shape == (32, 32)


def test_get_reconstructor_caches_sessions(tiny):
    d, path, kernel = tiny
    r1 = get_reconstructor(d / "tiny.json")
    assert get_reconstructor(d / "tiny.json") is r1
    assert get_reconstructor(r1) is r1
    assert get_reconstructor(d / "tiny.json", providers="cpu") is not r1


# ---------------------------------------------------------------------------------------------
# devices


def test_cuda_request_without_cuda_is_a_clear_error(tiny, monkeypatch):
    import onnxruntime as ort

    d, path, kernel = tiny
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    with pytest.raises(ModelError, match="CUDA was requested.*no CUDA support"):
        OnnxReconstructor(d / "tiny.json", providers="cuda")


def test_silent_cuda_fallback_is_reported(tiny, monkeypatch):
    """onnxruntime-gpu without working CUDA libraries quietly runs on the CPU: we say so."""
    import onnxruntime as ort

    d, path, kernel = tiny
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("CUDA is really available here")
    real = ort.get_available_providers()
    monkeypatch.setattr(ort, "get_available_providers",
                        lambda: ["CUDAExecutionProvider"] + real)
    rec = OnnxReconstructor(d / "tiny.json", providers="auto")
    assert rec.requested_providers[0] == "CUDAExecutionProvider"
    assert rec.device == "CPU" and "CUDAExecutionProvider" not in rec.providers
    assert any("fell back to the CPU" in n for n in rec.notes)
    x = _x((3, 32, 32))
    np.testing.assert_allclose(rec.predict(x), reference_output(x, kernel), atol=1e-5)


def test_auto_without_cuda_uses_cpu_quietly(tiny):
    import onnxruntime as ort

    d, path, kernel = tiny
    rec = OnnxReconstructor(d / "tiny.json")
    if "CUDAExecutionProvider" in ort.get_available_providers():
        assert rec.device in ("CUDA", "CPU")
    else:
        assert rec.device == "CPU" and rec.notes == []


def test_sha256_file(tmp_path):
    p = tmp_path / "f"
    p.write_bytes(b"abc")
    assert sha256_file(p) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


class _BrokenCudaSession:
    """Stands in for an onnxruntime-gpu session whose CUDA provider loads but fails to run."""

    real = None

    def __init__(self, path, sess_options=None, providers=None):
        self.cuda = "CUDAExecutionProvider" in (providers or [])
        self.inner = self.real(path, sess_options=sess_options, providers=["CPUExecutionProvider"])

    def get_providers(self):
        return (["CUDAExecutionProvider"] if self.cuda else []) + ["CPUExecutionProvider"]

    def get_inputs(self):
        return self.inner.get_inputs()

    def get_outputs(self):
        return self.inner.get_outputs()

    def run(self, *args, **kwargs):
        if self.cuda:
            raise RuntimeError("CUDNN failure 4: CUDNN_STATUS_INTERNAL_ERROR")
        return self.inner.run(*args, **kwargs)


def test_cuda_that_loads_but_fails_falls_back_to_cpu(tiny, monkeypatch):
    import onnxruntime as ort

    d, path, kernel = tiny
    _BrokenCudaSession.real = ort.InferenceSession
    monkeypatch.setattr(ort, "InferenceSession", _BrokenCudaSession)
    monkeypatch.setattr(ort, "get_available_providers",
                        lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    rec = OnnxReconstructor(d / "tiny.json")
    assert rec.device == "CPU" and rec.providers == ["CPUExecutionProvider"]
    assert any("CUDA failed on a test input (CUDNN failure" in n for n in rec.notes)
    x = _x((3, 32, 32))
    np.testing.assert_allclose(rec.predict(x), reference_output(x, kernel), atol=1e-5)
    with pytest.raises(ModelError, match="does not run on CUDA"):
        OnnxReconstructor(d / "tiny.json", providers="cuda")


def test_auto_tile_is_one_pass_up_to_1024_px(tiny):
    d, path, kernel = tiny
    rec = OnnxReconstructor(d / "tiny.json")
    x = _x((3, 300, 1000), seed=3)
    seen = []
    out = rec.predict(x, tile="auto", progress=lambda f, m: seen.append(m))
    assert seen == ["inference done"]  # one pass: 304 x 1008 padded
    np.testing.assert_allclose(out, rec.predict(x, tile=4096), atol=1e-5)
    seen.clear()
    out = rec.predict(_x((3, 40, 1100)), tile="auto", progress=lambda f, m: seen.append(m))
    assert seen[-1] == "inference tile 3/3" and out.shape == (40, 1100)  # 1104 px: 512 px tiles


def test_auto_tile_one_pass_up_to_1024_px_else_balanced_tiles():
    """The one tile rule (live, batch, CLI and predict(tile="auto") all use it)."""
    assert auto_tile((3, 1024, 1024), 0.1, 0.105, 16) == 976   # 975 px at the network's size
    assert auto_tile((3, 1000, 900), None, 0.105, 16) == 1008  # unknown sampling: as is
    for size in (1200, 1600, 2048, 4096):
        tile = auto_tile((3, size, size), 0.1, 0.105, 16)
        n = -(-int(np.ceil(size * 0.1 / 0.105)) // 16) * 16
        starts = tile_starts(n, tile, 64)
        assert tile <= 512 and tile % 16 == 0 and starts[-1] + tile == n
        # balanced: the last tile adds at least half a tile of new pixels
        assert n - (starts[-2] + tile) >= (tile - 64) / 2
    assert auto_tile((3, 2048, 2048), 0.1, 0.105, 16) == 448


# ---------------------------------------------------------------------------------------------
# verification (issue 13, item 14)


def test_card_without_hash_is_unverified_not_ok(tmp_path):
    path, _ = make_conv_model(tmp_path / "m.onnx", name="m")
    card = ModelCard.load(tmp_path / "m.json")
    assert card.verify() == "sha256 ok"
    path.write_bytes(np.random.default_rng(0).bytes(4000))  # random bytes, no hash to catch it
    card.sha256 = None
    assert card.verify().startswith("unverified (the card holds no sha256 for m.onnx")


def _external_data_model(tmp_path):
    import onnx

    path, kernel = make_conv_model(tmp_path / "src.onnx", name="ext")
    model = onnx.load(str(path))
    ext = tmp_path / "ext.onnx"
    onnx.save_model(model, str(ext), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="ext.onnx.data", size_threshold=100)  # the conv weights
    card = ModelCard.load(tmp_path / "src.json")
    card.onnx_file = ext.name
    card.path = tmp_path / "ext.json"
    return ext, card, kernel


def test_external_data_files_are_found_as_onnx_finds_them(tmp_path):
    import onnx
    from onnx.external_data_helper import _get_all_tensors, uses_external_data

    ext, card, _ = _external_data_model(tmp_path)
    model = onnx.load(str(ext), load_external_data=False)
    theirs = sorted({e.value for t in _get_all_tensors(model) if uses_external_data(t)
                     for e in t.external_data if e.key == "location"})
    assert external_data_files(ext) == theirs == ["ext.onnx.data"]
    assert external_data_files(tmp_path / "src.onnx") == []


def test_digest_covers_external_data(tmp_path):
    ext, card, kernel = _external_data_model(tmp_path)
    card.update_sha256()
    card.save()
    again = ModelCard.load(tmp_path / "ext.json")
    assert set(again.external_data_sha256) == {"ext.onnx.data"}
    assert again.verify() == "sha256 ok"
    x = _x((3, 32, 32))
    np.testing.assert_allclose(OnnxReconstructor(again).predict(x), reference_output(x, kernel),
                               atol=1e-5)
    data = tmp_path / "ext.onnx.data"
    raw = bytearray(data.read_bytes())
    raw[10] ^= 1  # one weight changed: the ONNX file itself is intact
    data.write_bytes(bytes(raw))
    with pytest.raises(ModelError, match="ext.onnx.data does not match its card"):
        again.verify()
    with pytest.raises(ModelError, match="ext.onnx.data does not match"):
        OnnxReconstructor(again)
    # a card that hashes only the ONNX file does not vouch for the data file
    again.external_data_sha256 = None
    assert again.verify() == "unverified (the card holds no sha256 for ext.onnx.data)"
    data.unlink()
    with pytest.raises(ModelError, match="ext.onnx.data, which the network loads, is missing"):
        again.verify()


def test_old_cards_stay_readable_and_shipped_cards_verify():
    from napari_exitwave.model_cards import models_dirs

    cards = sorted(p for d in models_dirs() for p in d.glob("*.json"))
    assert cards, "no shipped model cards found"
    for p in cards:
        card = ModelCard.load(p)
        assert card.external_data_sha256 is None  # written before the field existed
        assert "external_data_sha256" not in card.to_dict()
        assert card.verify() == "sha256 ok", p.name


def test_models_verify_reports_an_unhashed_card_as_unverified(tmp_path, capsys):
    from napari_exitwave.cli import main

    path, _ = make_conv_model(tmp_path / "r.onnx", name="r")
    path.write_bytes(np.random.default_rng(1).bytes(2000))
    card = ModelCard.load(tmp_path / "r.json")
    card.sha256 = None
    card.save()
    assert main(["models", "--dir", str(tmp_path), "--verify"]) == 0
    out = capsys.readouterr().out
    assert "[unverified (the card holds no sha256 for r.onnx)]" in out and "sha256 ok" not in out
