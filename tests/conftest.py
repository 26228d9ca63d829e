"""Fixtures shared by several test files.

- ``exitwave_plugin``: this plugin registered with napari's test plugin manager (npe2's
  ``npe2pm`` fixture, which blocks the discovery of other plugins), for tests that dock the
  widgets or open files in a viewer: ``pytestmark = pytest.mark.usefixtures("exitwave_plugin")``.
- ``dm_file``: a DM3/DM4 sample file; a test that asks for it runs once per file found in
  ``tests/data``, ``$NAPARI_EXITWAVE_DM_SAMPLES`` or ``../shared/dm-samples`` beside the
  checkout (the first folder that has any). With none it skips, except in CI, where it fails.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

DM_DIRS = [Path(__file__).parent / "data", Path(os.environ.get("NAPARI_EXITWAVE_DM_SAMPLES", "")),
           Path(__file__).resolve().parents[2] / "shared" / "dm-samples"]


def dm_samples() -> list[Path]:
    """The DM3/DM4 files of the first folder of :data:`DM_DIRS` that has any."""
    for d in DM_DIRS:
        if str(d) and d.is_dir():
            files = sorted(p for p in d.iterdir() if p.suffix.lower() in (".dm3", ".dm4"))
            if files:
                return files
    return []


def pytest_generate_tests(metafunc):
    if "dm_file" in metafunc.fixturenames:
        files = dm_samples()
        metafunc.parametrize("dm_file", files or [None], indirect=True,
                             ids=[p.name for p in files] or ["no DM samples"])


@pytest.fixture
def dm_file(request) -> Path:
    if request.param is None:
        assert not os.environ.get("CI"), \
            "DM sample files must be found in CI (../shared/dm-samples)"
        pytest.skip("DM sample files not found (tests/data or $NAPARI_EXITWAVE_DM_SAMPLES)")
    return request.param


@pytest.fixture
def exitwave_plugin(npe2pm):
    from npe2 import PluginManifest

    npe2pm.register(PluginManifest.from_distribution("napari-exitwave"))
    return npe2pm
