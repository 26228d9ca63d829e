"""A short run of benchmarks/live_soak.py: kills, a disk that fills, a rough acquisition; the
watcher loses nothing and does nothing twice."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))


def test_short_soak_loses_nothing_and_duplicates_nothing(tmp_path):
    import live_soak

    fig = live_soak.run_soak(n_series=16, seed=3, poll=0.1, writers=6, kill_every=(1.0, 2.5),
                             full_every=(1.0, 2.0), full_for=(0.5, 1.5), disk="hook",
                             work=tmp_path / "soak")
    assert fig["kills"] >= 2 and fig["disk_full_periods"] >= 1
    assert fig["lost"] == 0 and fig["duplicated"] == 0 and fig["wrong"] == 0, fig
    n_corrupt = fig["kinds"]["corrupt"]
    assert fig["failed_with_reason"] == n_corrupt and not fig["failed_not_corrupt"], fig
    assert fig["done_once"] == 16 - n_corrupt
    assert fig["temp_files_left"] == []
