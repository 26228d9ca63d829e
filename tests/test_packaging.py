"""What a user installs: the npe2 manifest, the wheel and sdist, and the wheel in a fresh venv.

The manifest has one source, ``src/napari_exitwave/napari.yaml``. The shipped networks have one
source, the repository's ``models/``, mapped into the wheel as ``napari_exitwave/models/`` (only
ONNX files, their cards and ONNX external data). The slow test builds the sdist and, from it,
the wheel (as ``python -m build`` does for an upload), installs the wheel with its dependencies
into a new virtual environment outside the checkout, and runs the CLI and ``npe2 validate``
there: what a user gets from ``pip install napari-exitwave``.
"""

from __future__ import annotations

import email
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest

npe2 = pytest.importorskip("npe2")

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = ROOT / "src" / "napari_exitwave" / "napari.yaml"
CARDS = sorted((ROOT / "models").glob("*.json"))
SHIPPED = ("*.onnx", "*.json", "*.onnx.data")  # what goes from models/ into the wheel

# a new venv must not see this checkout, a developer's PYTHONPATH or their model folders
_HIDDEN_ENV = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV", "NAPARI_EXITWAVE_MODELS")


def _run(cmd, timeout=300, **kwargs):
    out = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout,
                         **kwargs)
    assert out.returncode == 0, \
        f"{' '.join(map(str, cmd))}\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out


def _source_tree(dest: Path, models: bool = True) -> Path:
    """What the build reads, copied from the checkout without build leftovers.

    A stale ``*.egg-info/SOURCES.txt`` (left by an earlier build or the editable install) would
    be merged into the sdist, so the build runs on a clean copy, which also keeps it from
    writing into the checkout.
    """
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc")
    dest.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md", "LICENSE", "MANIFEST.in", "setup.py", "setup.cfg"):
        if (ROOT / name).is_file():
            shutil.copy2(ROOT / name, dest / name)
    for name in ("src", "training") + (("models",) if models else ()):
        shutil.copytree(ROOT / name, dest / name, ignore=ignore)
    return dest


def _build(src: Path, outdir: Path) -> tuple[Path, Path]:
    """sdist of ``src``, then the wheel built from that sdist (``python -m build``)."""
    _run([sys.executable, "-m", "build", "--outdir", outdir, src])
    (sdist,) = outdir.glob("napari_exitwave-*.tar.gz")
    (wheel,) = outdir.glob("napari_exitwave-*.whl")
    return sdist, wheel


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
    base = tmp_path_factory.mktemp("dist")
    return _build(_source_tree(base / "tree"), base)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ----------------------------------------------------------------------------------------------
# the checkout


def test_manifest_is_one_real_file_inside_the_package():
    """Not a link (a Windows checkout turns one into a text stub), and no second copy."""
    assert MANIFEST.is_file() and not MANIFEST.is_symlink()
    assert not (ROOT / "napari.yaml").exists()


def test_manifest_is_valid_and_discovered_from_the_install():
    manifest = npe2.PluginManifest.from_file(MANIFEST)
    assert manifest.name == "napari-exitwave"
    pm = npe2.PluginManager.instance()
    pm.discover()
    found = pm.get_manifest("napari-exitwave")
    assert found.name == manifest.name
    commands = {c.id for c in found.contributions.commands or []}
    assert commands and all(c.startswith("napari-exitwave.") for c in commands)
    assert found.contributions.readers and found.contributions.widgets
    assert found.contributions.sample_data


def test_checkout_finds_the_repository_models_after_the_users(tmp_path, monkeypatch):
    """A source checkout (editable install) reads models/ itself; $NAPARI_EXITWAVE_MODELS first."""
    from napari_exitwave.inference import list_models, models_dirs

    monkeypatch.delenv("NAPARI_EXITWAVE_MODELS", raising=False)
    assert models_dirs() == [ROOT / "models"]
    assert sorted(list_models(kind=None)) == sorted(json.loads(c.read_text())["name"] for c in CARDS)
    monkeypatch.setenv("NAPARI_EXITWAVE_MODELS", str(tmp_path))
    assert models_dirs() == [tmp_path, ROOT / "models"]


# ----------------------------------------------------------------------------------------------
# sdist and wheel


@pytest.mark.slow
def test_wheel_ships_manifest_networks_and_index_metadata(dist):
    _, wheel = dist
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        assert z.read("napari_exitwave/napari.yaml") == MANIFEST.read_bytes()
        info = next(n for n in names if n.endswith(".dist-info/METADATA"))
        meta = email.message_from_bytes(z.read(info))
        entry_points = z.read(info.replace("METADATA", "entry_points.txt")).decode()
        # every shipped network: its card, the ONNX file the card's sha256 names, and the
        # external-data files the card lists (a name package-data does not match fails here)
        assert CARDS
        for card_path in CARDS:
            card = json.loads(card_path.read_text())
            assert z.read(f"napari_exitwave/models/{card_path.name}") == card_path.read_bytes()
            onnx = z.read(f"napari_exitwave/models/{card['onnx_file']}")
            assert _sha256(onnx) == card["sha256"], card["name"]
            for loc, digest in (card.get("external_data_sha256") or {}).items():
                member = f"napari_exitwave/models/{loc}"
                assert member in names, (f"{card['name']}: external data {loc} is not in the "
                                         f"wheel; save it as <name>.onnx.data beside the model")
                assert _sha256(z.read(member)) == digest, loc
    shipped = {n for n in names if n.startswith("napari_exitwave/models/")}
    assert shipped == {f"napari_exitwave/models/{p.name}" for pat in SHIPPED
                       for p in (ROOT / "models").glob(pat)}
    assert "napari-exitwave = napari_exitwave:napari.yaml" in entry_points
    assert any(n.startswith("exitwave_training/") for n in names)
    assert "napari_exitwave/data/sample_series.tif" in names
    assert "napari_exitwave/data/sample_mosg22_series.tif" in names
    # what a plugin index reads: SPDX licence (PEP 639), URLs, classifiers, extras
    assert meta["License-Expression"] == "BSD-3-Clause"
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert not any(c.startswith("License ::") for c in meta.get_all("Classifier"))
    assert "Framework :: napari" in meta.get_all("Classifier")
    urls = dict(u.split(", ", 1) for u in meta.get_all("Project-URL"))
    assert {"Source Code", "Bug Tracker", "Documentation"} <= set(urls)
    assert {"napari", "gpu", "training", "testing"} <= set(meta.get_all("Provides-Extra"))
    requires = meta.get_all("Requires-Dist")
    core = [r.split(";")[0].split(">")[0].split("[")[0].strip().lower() for r in requires
            if "extra ==" not in r]
    assert "onnxruntime" in core and "npe2" in core
    assert not {"tensorflow", "tensorflow-cpu", "keras", "abtem", "onnx", "napari",
                "onnxruntime-gpu"} & set(core), core
    assert any(r.startswith("onnxruntime-gpu") and 'extra == "gpu"' in r for r in requires)
    assert any(r.startswith("napari[") and 'extra == "napari"' in r for r in requires)


@pytest.mark.slow
def test_sdist_carries_the_networks_and_the_manifest(dist):
    """The wheel above was built from this sdist, so an sdist install gets the same files."""
    sdist, _ = dist
    with tarfile.open(sdist) as t:
        top = t.getnames()[0].split("/")[0]
        names = {n.removeprefix(top + "/") for n in t.getnames()}
    assert {f"models/{p.name}" for p in CARDS} <= names
    assert {f"models/{json.loads(p.read_text())['onnx_file']}" for p in CARDS} <= names
    assert {"src/napari_exitwave/napari.yaml", "LICENSE", "pyproject.toml"} <= names
    assert not any(n.startswith("models/") and not n.endswith((".onnx", ".json", ".onnx.data"))
                   for n in names)


@pytest.mark.slow
def test_only_networks_and_cards_go_from_models_into_the_package(tmp_path):
    """Training checkpoints and notes beside the networks stay out of the sdist and the wheel."""
    src = _source_tree(tmp_path / "tree", models=False)
    models = _mkdir(src / "models")
    files = {"net.onnx": True, "net.json": True, "net.onnx.data": True, "net.keras": False,
             "net.weights.h5": False, "checkpoint.npz": False, "notes.txt": False,
             "runs/history.json": False}
    for name in files:
        _mkdir((models / name).parent)
        (models / name).write_bytes(name.encode())
    sdist, wheel = _build(src, tmp_path / "dist")
    with zipfile.ZipFile(wheel) as z:
        in_wheel = {n.removeprefix("napari_exitwave/models/") for n in z.namelist()
                    if n.startswith("napari_exitwave/models/")}
    with tarfile.open(sdist) as t:
        in_sdist = {n.split("/models/", 1)[1] for n in t.getnames() if "/models/" in n}
    wanted = {n for n, ship in files.items() if ship}
    assert in_wheel == wanted
    assert in_sdist == wanted


def _mkdir(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p


# ----------------------------------------------------------------------------------------------
# the wheel in a fresh virtual environment


@pytest.fixture
def user_home(tmp_path_factory):
    """A folder outside the checkout for the new venv (~600 MB, removed afterwards)."""
    base = tmp_path_factory.mktemp("user")
    assert ROOT not in base.parents, "the fresh venv must live outside the checkout"
    yield base
    shutil.rmtree(base / "venv", ignore_errors=True)


@pytest.mark.slow
def test_wheel_installs_and_reconstructs_in_a_fresh_venv(dist, user_home):
    """pip install of the wheel (with its dependencies) into a new venv outside the checkout."""
    _, wheel = dist
    base = user_home
    venv, work = base / "venv", _mkdir(base / "work")
    _run([sys.executable, "-m", "venv", "--without-pip", venv])
    py, bindir = venv / "bin" / "python", venv / "bin"
    env = {k: v for k, v in os.environ.items() if k not in _HIDDEN_ENV}
    env["MPLBACKEND"] = "Agg"
    # the checkout's pins, so that CI reuses the wheels pip cached when it set up .venv
    _run([sys.executable, "-m", "pip", "--python", py, "install", "-q", "--no-compile",
          "-c", ROOT / "constraints.txt", wheel], timeout=600, env=env, cwd=work)

    def run(*cmd, **kw):
        return _run(cmd, cwd=work, env={**env, **kw.pop("env", {})}, **kw)

    site = Path(run(py, "-c", "import napari_exitwave, os; "
                    "print(os.path.dirname(napari_exitwave.__file__))").stdout.strip())
    assert venv in site.parents and ROOT not in site.parents
    # the plugin core needs neither TensorFlow nor abTEM nor napari
    heavy = run(py, "-c", "import importlib.util as u; print(' '.join(m for m in ('tensorflow', "
                "'keras', 'abtem', 'onnx', 'napari', 'PyQt5') if u.find_spec(m)))").stdout
    assert heavy.strip() == "", f"installed without being asked for: {heavy}"

    # every shipped network is listed, from the installed package, and matches its card
    listing = run(bindir / "napari-exitwave", "models", "--verify").stdout
    names = [json.loads(c.read_text())["name"] for c in CARDS]
    for name in names:
        assert f"{name}:" in listing, listing
    assert listing.count("[sha256 ok]") == len(names) and "BROKEN" not in listing, listing
    assert str(site / "models") in listing and str(ROOT) not in listing, listing

    # a user's own model of the same name comes first
    from onnx_helpers import make_conv_model

    mine = _mkdir(base / "my-models")
    make_conv_model(mine / "my_mos2.onnx", name="mos2", sampling=0.105)
    listing = run(bindir / "napari-exitwave", "models",
                  env={"NAPARI_EXITWAVE_MODELS": str(mine)}).stdout
    assert str(mine / "my_mos2.onnx") in listing
    assert str(site / "models" / "mos2.onnx") not in listing

    # the bundled sample, reconstructed by the default network
    out = work / "out"
    run(bindir / "napari-exitwave", "reconstruct", "sample", "--out", out)
    assert {"sample_exit_wave.tif", "sample_exit_wave.zarr", "sample_peaks.csv",
            "sample_argand.png", "sample.json"} <= {p.name for p in out.iterdir()}
    meta = json.loads((out / "sample.json").read_text())
    card = json.loads((ROOT / "models" / "mos2.json").read_text())
    assert meta["model"] == "mos2" and meta["model_sha256"] == card["sha256"]
    from napari_exitwave import metrics
    from napari_exitwave.data import load_sample_exit_wave
    from napari_exitwave.io import read_exit_wave

    wave, sampling, _ = read_exit_wave(out / "sample_exit_wave.tif")
    truth, truth_sampling, _ = load_sample_exit_wave("mos2")
    assert wave.shape == truth.shape and sampling == pytest.approx(truth_sampling)
    rmse_imag = metrics.rmse(wave, truth)[1]
    vacuum_imag = metrics.rmse(np.ones_like(truth), truth)[1]
    assert rmse_imag < 0.5 * vacuum_imag, (rmse_imag, vacuum_imag)  # a network, not vacuum

    # npe2 finds the installed manifest; the Qt-free contributions import and run
    assert "valid" in run(bindir / "npe2", "validate", "napari-exitwave").stdout
    probe = run(py, "-c", """if True:
        import importlib, npe2
        pm = npe2.PluginManager.instance()
        pm.discover()
        for c in pm.get_manifest("napari-exitwave").contributions.commands:
            if "._qt." not in c.python_name:  # widgets need Qt, which [napari] brings
                module, name = c.python_name.split(":")
                assert callable(getattr(importlib.import_module(module), name)), c.id
        (data, kw, kind), = pm.get_command("napari-exitwave.sample_series").exec()
        print(kind, data.shape, kw["scale"])
        """).stdout
    assert probe.split()[0] == "image" and "(3, 256, 256)" in probe
