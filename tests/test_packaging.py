"""The npe2 manifest: one source (src/napari_exitwave/napari.yaml), found by napari, in the wheel."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

npe2 = pytest.importorskip("npe2")

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = ROOT / "src" / "napari_exitwave" / "napari.yaml"


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


def test_wheel_ships_the_manifest_and_its_entry_point(tmp_path):
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                          "-q", "-w", str(tmp_path), str(ROOT)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    (wheel,) = tmp_path.glob("napari_exitwave-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        assert z.read("napari_exitwave/napari.yaml") == MANIFEST.read_bytes()
        entry_points = z.read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "napari-exitwave = napari_exitwave:napari.yaml" in entry_points
    assert any(n.startswith("exitwave_training/") for n in names)
    assert "napari_exitwave/data/sample_series.tif" in names
    assert "napari_exitwave/data/sample_mosg22_series.tif" in names
