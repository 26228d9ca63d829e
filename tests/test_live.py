"""Live folder watching: complete files only, every series exactly once, errors isolated, resume."""

from __future__ import annotations

import io
import json
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_exitwave.io import FocalSeries
from napari_exitwave.live import FolderWatcher, Grouping

NY = NX = 32




class RecordingReader:
    """tifffile reader that counts successful reads per file and records what it returned."""

    def __init__(self):
        self.reads = Counter()
        self.failures = Counter()
        self.lock = threading.Lock()

    def __call__(self, path):
        name = Path(path).name
        try:
            with tifffile.TiffFile(path) as tif:
                images = tif.asarray().astype(np.float32)
                meta = tif.shaped_metadata[0] if tif.shaped_metadata else {}
        except Exception:
            with self.lock:
                self.failures[name] += 1
            raise
        with self.lock:
            self.reads[name] += 1
        d = meta.get("defocus")
        return FocalSeries(images, 0.1, "A", None if d is None else list(np.atleast_1d(d)),
                       {}, str(path))


class FakeReconstruct:
    """Fast reconstruct_fn: exit wave = mean image + 1j * image count; records each call."""

    def __init__(self, fail_on: float | None = None, delay: float = 0.0):
        self.calls = []
        self.fail_on = fail_on
        self.delay = delay

    def __call__(self, series):
        images = np.asarray(series.images)
        self.calls.append(series.metadata["files"])
        time.sleep(self.delay)
        if self.fail_on is not None and np.any(images == self.fail_on):
            raise RuntimeError("simulated reconstruction failure")
        wave = (images.mean(axis=0) + 1j * images.shape[0]).astype(np.complex64)
        return type("Rec", (), {"exit_wave": wave, "sampling": 0.1, "method": "fake",
                                "model_name": "fake", "device": "CPU", "timings": {},
                                "warnings": [], "shifts": None})()


def tiff_bytes(value: float, defocus: float | None = None) -> bytes:
    """A 32x32 float32 TIFF whose every pixel is ``value`` (so partial data is detectable)."""
    b = io.BytesIO()
    meta = {} if defocus is None else {"defocus": [defocus]}
    tifffile.imwrite(b, np.full((NY, NX), value, np.float32), metadata=meta)
    return b.getvalue()


def write_slowly(path: Path, data: bytes, n_chunks: int = 4, pause: float = 0.03) -> None:
    """Write a file chunk by chunk, as a camera writing over a network share would."""
    step = -(-len(data) // n_chunks)
    with open(path, "wb") as f:
        for i in range(0, len(data), step):
            f.write(data[i:i + step])
            f.flush()
            time.sleep(pause)


def write_at_once(path: Path, data: bytes) -> None:
    path.write_bytes(data)


def run_until(watcher: FolderWatcher, predicate, timeout: float = 20.0):
    stop = threading.Event()
    t = threading.Thread(target=watcher.run, args=(stop,), daemon=True)
    t.start()
    t0 = time.monotonic()
    try:
        while not predicate():
            if time.monotonic() - t0 > timeout:
                raise AssertionError("watcher did not finish in time")
            time.sleep(0.05)
    finally:
        stop.set()
        t.join(10)
    assert not t.is_alive()


def test_slow_writes_and_bursts_every_series_exactly_once_no_partial_read(tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    reader, recon = RecordingReader(), FakeReconstruct()
    # settle 0.5 s: ~15x the writer's pause between chunks, margin for a loaded CI machine
    w = FolderWatcher(src, out, Grouping("count", n_images=3), recon, poll_interval=0.2,
                      settle=0.5, reader=reader)
    done = []
    w.series_done.connect(done.append)

    def acquire():
        # series 1 and 2: written slowly, one file after the other (values 1..6)
        for v in range(1, 7):
            write_slowly(src / f"img_{v:03d}.tif", tiff_bytes(v))
        # series 3..5: a burst of 9 files at once
        for v in range(7, 16):
            write_at_once(src / f"img_{v:03d}.tif", tiff_bytes(v))

    writer = threading.Thread(target=acquire)
    writer.start()
    run_until(w, lambda: len(done) >= 5 and not writer.is_alive())
    writer.join()

    # every file read exactly once, every series reconstructed exactly once, in order
    assert set(reader.reads) == {f"img_{v:03d}.tif" for v in range(1, 16)}
    assert max(reader.reads.values()) == 1
    assert not reader.failures  # not even an attempt on a half-written file
    assert [c for c in recon.calls] == [[f"img_{v:03d}.tif" for v in range(3 * k + 1, 3 * k + 4)]
                                        for k in range(5)]
    for k in range(5):
        wave = np.load(out / f"series_{k + 1:04d}_exit_wave.npy")
        # no partial read: the mean of the three constant images is exact
        np.testing.assert_allclose(wave, np.full((NY, NX), 3 * k + 2 + 3j), rtol=0, atol=1e-6)
        meta = json.loads((out / f"series_{k + 1:04d}.json").read_text())
        assert meta["sampling"] == 0.1 and meta["files"] == recon.calls[k]
        assert tifffile.imread(out / f"series_{k + 1:04d}_exit_wave.tif").shape == (2, NY, NX)
    assert not (out / "errors.jsonl").exists()


def test_corrupt_file_and_failing_series_are_reported_and_the_watch_goes_on(tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    recon = FakeReconstruct(fail_on=9.0)
    w = FolderWatcher(src, out, Grouping("count", n_images=3), recon, poll_interval=0.05,
                      reader=RecordingReader(), max_read_attempts=2)
    results = []
    w.series_done.connect(results.append)
    w.series_failed.connect(results.append)
    files = {"a1.tif": tiff_bytes(1), "a2.tif": tiff_bytes(2), "a3.tif": tiff_bytes(3),
             "b1.tif": tiff_bytes(4), "b2.tif": b"II*\x00 this is not a tiff" * 20,
             "b3.tif": tiff_bytes(6),
             "c1.tif": tiff_bytes(7), "c2.tif": tiff_bytes(8), "c3.tif": tiff_bytes(9),
             "d1.tif": tiff_bytes(10), "d2.tif": tiff_bytes(11), "d3.tif": tiff_bytes(12)}
    for name, data in files.items():
        write_at_once(src / name, data)
        time.sleep(0.002)  # distinct modification times: the order of arrival
    run_until(w, lambda: len(results) >= 4)

    status = {r.series_id: r.status for r in results}
    assert status == {"series_0001": "done", "series_0002": "failed",
                      "series_0003": "failed", "series_0004": "done"}
    # the corrupt file kept its place: the series after it stayed aligned
    assert [r.files for r in results][3] == ["d1.tif", "d2.tif", "d3.tif"]
    errors = [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]
    kinds = {(e["kind"], e["name"]) for e in errors}
    assert ("file", "b2.tif") in kinds
    assert ("series", "series_0002") in kinds and ("series", "series_0003") in kinds
    assert "simulated reconstruction failure" in " ".join(e["error"] for e in errors)
    assert (out / "series_0004_exit_wave.npy").exists() and not (out / "series_0003_exit_wave.npy").exists()


def test_restart_resumes_without_redoing_finished_series(tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    for v in range(1, 8):  # two full series and one image of the third
        write_at_once(src / f"img_{v:03d}.tif", tiff_bytes(v))
        time.sleep(0.002)
    recon1 = FakeReconstruct()
    w1 = FolderWatcher(src, out, Grouping("count", n_images=3), recon1, poll_interval=0.05,
                       settle=0.0, reader=RecordingReader())
    w1.poll_once()
    assert w1.poll_once()  # second poll: files stable -> read, grouped, reconstructed
    assert len(recon1.calls) == 2 and w1.n_done == 2
    ledger = json.loads((out / "live-ledger.json").read_text())
    assert set(ledger["series"]) == {"series_0001", "series_0002"}
    mtime = (out / "series_0001_exit_wave.npy").stat().st_mtime_ns
    del w1  # "stop"

    for v in range(8, 11):  # the rest of series 3 and one more image
        write_at_once(src / f"img_{v:03d}.tif", tiff_bytes(v))
        time.sleep(0.002)
    recon2, reader2 = FakeReconstruct(), RecordingReader()
    w2 = FolderWatcher(src, out, Grouping("count", n_images=3), recon2, poll_interval=0.05,
                       settle=0.0, reader=reader2)
    for _ in range(3):
        w2.poll_once()
    # only the new series, with the image that arrived before the stop
    assert recon2.calls == [["img_007.tif", "img_008.tif", "img_009.tif"]]
    assert set(reader2.reads) == {"img_007.tif", "img_008.tif", "img_009.tif", "img_010.tif"}
    assert (out / "series_0001_exit_wave.npy").stat().st_mtime_ns == mtime
    np.testing.assert_allclose(np.load(out / "series_0003_exit_wave.npy"), np.full((NY, NX), 8 + 3j))
    assert w2.n_done == 3


def test_grouping_by_pattern(tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    recon = FakeReconstruct()
    g = Grouping("pattern", n_images=2, pattern=r"^(?P<series>[a-z]+)_(?P<index>\d+)\.tif$")
    w = FolderWatcher(src, out, g, recon, settle=0.0, reader=RecordingReader())
    # interleaved arrival; indices out of order; one file not matching
    for name, v in [("tile_2.tif", 2), ("edge_1.tif", 5), ("notes.tif", 0), ("tile_1.tif", 1)]:
        write_at_once(src / name, tiff_bytes(v))
    w.poll_once()
    done = w.poll_once()
    assert [r.series_id for r in done] == ["tile"]
    assert done[0].files == ["tile_1.tif", "tile_2.tif"]  # ordered by the index group
    write_at_once(src / "edge_2.tif", tiff_bytes(7))
    w.poll_once()
    done = w.poll_once()
    assert [(r.series_id, r.files) for r in done] == [("edge", ["edge_1.tif", "edge_2.tif"])]
    np.testing.assert_allclose(np.load(out / "edge_exit_wave.npy"), np.full((NY, NX), 6 + 2j))
    with pytest.raises(ValueError, match="group"):
        Grouping("pattern", n_images=2, pattern=r"\.tif$")


def test_grouping_by_defocus_reset_with_the_real_reader(tmp_path):
    """Defoci from the files' metadata (io.write_series_tiff / io.read_image), one image a file."""
    from napari_exitwave.io import write_series_tiff

    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    recon = FakeReconstruct()
    w = FolderWatcher(src, out, Grouping("defocus", n_images=None, timeout=0.3), recon,
                      settle=0.0)
    # three series: -50, 0, 50 | 50 (repeat: reset), 0, -50 (a decreasing sweep) |
    # -40 (turns back: reset), 10, then silence
    seq = [-50, 0, 50, 50, 0, -50, -40, 10]
    for i, d in enumerate(seq):
        tmp = src / f".im{i:02d}.tif"  # written under a hidden name, then renamed
        write_series_tiff(tmp, np.full((1, NY, NX), i, np.float32), sampling=0.1, defocus=[d])
        tmp.rename(src / f"im{i:02d}.tif")
        time.sleep(0.002)
    w.poll_once()
    done = w.poll_once()
    # the third series is still open: its end is only known by a reset or the timeout
    assert [r.files for r in done] == [["im00.tif", "im01.tif", "im02.tif"],
                                       ["im03.tif", "im04.tif", "im05.tif"]]
    time.sleep(0.35)
    done = w.poll_once()
    assert [r.files for r in done] == [["im06.tif", "im07.tif"]]
    np.testing.assert_allclose(np.load(out / "series_0002_exit_wave.npy"), np.full((NY, NX), 4 + 3j))
    from napari_exitwave.io import read_exit_wave

    wave, sampling, _ = read_exit_wave(out / "series_0003_exit_wave.tif")
    assert sampling == pytest.approx(0.1)
    np.testing.assert_allclose(wave, np.full((NY, NX), 6.5 + 2j))


def test_files_without_defocus_are_reported_in_defocus_mode(tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    w = FolderWatcher(src, out, Grouping("defocus", n_images=2), FakeReconstruct(), settle=0.0,
                      reader=RecordingReader())
    write_at_once(src / "a.tif", tiff_bytes(1))  # no defocus in its metadata
    w.poll_once()
    assert w.poll_once() == []
    errors = (out / "errors.jsonl").read_text()
    assert "a.tif" in errors and "--group-by count" in errors


def test_auto_tile_one_pass_up_to_1024_px_else_balanced_tiles():
    """The one auto-tile rule lives in inference.py (live has no copy of it any more)."""
    from napari_exitwave import inference
    from napari_exitwave.inference import tile_starts

    auto_tile = getattr(inference, "auto_tile", None)
    if auto_tile is None:
        pytest.skip("inference.auto_tile (the balanced-tile rule) is not in this checkout")

    assert auto_tile((3, 1024, 1024), 0.1, 0.105, 16) == 976   # 975 px at the network's size
    assert auto_tile((3, 1000, 900), None, 0.105, 16) == 1008  # unknown sampling: as is
    for size, n_net in [(1100, 1056), (2048, 1952), (4096, 3904), (1500, 1440)]:
        tile = auto_tile((3, size, size), 0.1, 0.105, 16)
        assert tile % 16 == 0 and tile <= 512
        starts = tile_starts(n_net, tile, 64)
        # as few tiles as 512 px tiles need, and less area (the last tile is not mostly overlap)
        assert len(starts) == len(tile_starts(n_net, 512, 64))
        assert starts[-1] + tile == n_net and np.all(np.diff(starts) <= tile - 64)
    assert auto_tile((3, 2048, 2048), 0.1, 0.105, 16) == 448


def test_a_file_rewritten_after_it_was_read_is_not_used_twice(tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    recon, reader = FakeReconstruct(), RecordingReader()
    w = FolderWatcher(src, out, Grouping("count", n_images=2), recon, settle=0.0, reader=reader)
    write_at_once(src / "a.tif", tiff_bytes(1))
    w.poll_once()
    w.poll_once()  # a.tif read, waiting for a partner
    time.sleep(0.01)
    write_at_once(src / "a.tif", tiff_bytes(5))  # the software rewrites it
    for _ in range(3):
        w.poll_once()
    assert recon.calls == [] and reader.reads["a.tif"] == 1
    write_at_once(src / "b.tif", tiff_bytes(3))
    w.poll_once()
    done = w.poll_once()
    assert [r.files for r in done] == [["a.tif", "b.tif"]]
    np.testing.assert_allclose(np.load(out / "series_0001_exit_wave.npy"), np.full((NY, NX), 2 + 2j))
