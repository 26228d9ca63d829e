"""The live watcher at a real microscope: vanished and stalled files, stacks written with pauses,
a read-only or full output folder, links in the output folder (issue 13, items 1-4 and 9)."""

from __future__ import annotations

import errno
import io
import logging
import json
import threading
import time

import numpy as np
import pytest
import tifffile

from napari_exitwave import results
from napari_exitwave.live import FolderWatcher, Grouping
from test_live import FakeReconstruct, RecordingReader, tiff_bytes

NY = NX = 32


def _poll_for(w: FolderWatcher, seconds: float, step: float = 0.02) -> list:
    done, t0 = [], time.monotonic()
    while time.monotonic() - t0 < seconds:
        done += w.poll_once()
        time.sleep(step)
    return done


def _stack_bytes(values, declare: bool) -> tuple[bytes, list[int]]:
    """A multi-page TIFF (one constant page per value) and the byte offset where each page ends."""
    b = io.BytesIO()
    data = np.stack([np.full((NY, NX), v, np.float32) for v in values])
    if declare:  # an ImageJ stack: its description says images=3
        tifffile.imwrite(b, data, imagej=True)
    else:
        with tifffile.TiffWriter(b) as tw:
            for page in data:  # separate pages, no description: nothing says how many
                tw.write(page, description="", metadata=None, contiguous=False)
    raw = b.getvalue()
    with tifffile.TiffFile(io.BytesIO(raw)) as tif:
        ends = [max(o + c for o, c in zip(p.dataoffsets, p.databytecounts)) for p in tif.pages]
    return raw, ends


def test_a_vanished_file_no_longer_holds_back_the_series_behind_it(tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    recon = FakeReconstruct()
    w = FolderWatcher(src, out, Grouping("count", n_images=2), recon, poll_interval=0.02,
                      settle=0.0, reader=RecordingReader())
    good = tiff_bytes(1)
    (src / "a.tif").write_bytes(good[: len(good) // 2])  # a writer that stalls ...
    time.sleep(0.005)
    for name, v in [("b.tif", 2), ("c.tif", 4)]:
        (src / name).write_bytes(tiff_bytes(v))
        time.sleep(0.005)
    assert _poll_for(w, 0.2) == []  # a.tif failed a read: its place in the order is kept
    (src / "a.tif").unlink()        # ... and is then deleted
    done = _poll_for(w, 0.2)
    assert [r.files for r in done] == [["b.tif", "c.tif"]]
    np.testing.assert_allclose(np.load(out / "series_0001_exit_wave.npy"), 3 + 2j)
    assert not (out / "errors.jsonl").exists()


def test_a_stalled_writer_is_retried_never_declared_corrupt_while_it_writes(tmp_path, caplog):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    reader = RecordingReader()
    w = FolderWatcher(src, out, Grouping("count", n_images=1), FakeReconstruct(),
                      poll_interval=0.02, settle=0.02, reader=reader, max_read_attempts=3)
    data = tiff_bytes(7)
    chunks = [data[i:i + 400] for i in range(0, len(data), 400)]
    stop = threading.Event()
    t = threading.Thread(target=w.run, args=(stop,), daemon=True)
    t.start()
    caplog.set_level(logging.INFO, logger="napari_exitwave.live")
    with open(src / "slow.tif", "wb") as f:
        for chunk in chunks:  # pauses of 10 polls between chunks, 3 attempts allowed
            f.write(chunk)
            f.flush()
            time.sleep(0.2)
    time.sleep(0.5)
    stop.set()
    t.join(10)
    tries = [r for r in caplog.messages if "slow.tif does not open yet" in r]
    assert len(tries) >= 3  # it was tried while stalled (the page data not all there) ...
    assert reader.reads["slow.tif"] == 1 and not reader.failures  # ... and read once, whole
    assert not (out / "errors.jsonl").exists()
    np.testing.assert_allclose(np.load(out / "series_0001_exit_wave.npy"), 7 + 1j)


def test_a_file_unchanged_and_unreadable_is_reported_after_back_off(tmp_path, caplog):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    reader = RecordingReader()
    w = FolderWatcher(src, out, Grouping("count", n_images=1), FakeReconstruct(),
                      poll_interval=0.01, settle=0.01, reader=reader, max_read_attempts=3)
    caplog.set_level(logging.INFO, logger="napari_exitwave.live")
    (src / "bad.tif").write_bytes(b"II*\x00 not a tiff" * 30)
    t0 = time.monotonic()
    results_ = _poll_for(w, 0.6)
    assert [r.status for r in results_] == ["failed"]
    assert len([m for m in caplog.messages if "bad.tif does not open yet" in m]) == 2
    assert time.monotonic() - t0 > 0.01 * (2 + 4)  # back-off: 2x, 4x settle between tries
    errors = (out / "errors.jsonl").read_text()
    assert "could not be read after 3 attempts while unchanged" in errors


@pytest.mark.parametrize("declare", [True, False], ids=["declared", "plain"])
def test_a_stack_written_with_pauses_is_grouped_whole(tmp_path, declare):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    recon, reader = FakeReconstruct(), RecordingReader()
    w = FolderWatcher(src, out, Grouping("count", n_images=3), recon, poll_interval=0.02,
                      settle=0.05, stack_settle=0.3, reader=reader)
    raw, ends = _stack_bytes([1, 2, 3], declare)
    stop = threading.Event()
    t = threading.Thread(target=w.run, args=(stop,), daemon=True)
    t.start()
    with open(src / "stack.tif", "wb") as f:
        start = 0
        for end in ends[:-1] + [len(raw)]:  # page by page, pauses of 10 polls
            f.write(raw[start:end])
            f.flush()
            start = end
            time.sleep(0.2)
    for k, v in enumerate([10, 11, 12]):  # the next series: single images
        (src / f"z{k}.tif").write_bytes(tiff_bytes(v))
        time.sleep(0.005)
    time.sleep(1.0)
    stop.set()
    t.join(10)
    assert recon.calls == [["stack.tif"], ["z0.tif", "z1.tif", "z2.tif"]]
    np.testing.assert_allclose(np.load(out / "series_0001_exit_wave.npy"), 2 + 3j)
    np.testing.assert_allclose(np.load(out / "series_0002_exit_wave.npy"), 11 + 3j)


@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EROFS], ids=["full", "read-only"])
def test_an_output_folder_that_refuses_results_never_stops_the_watch(tmp_path, err):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    recon = FakeReconstruct()
    w = FolderWatcher(src, out, Grouping("count", n_images=1), recon, poll_interval=0.02,
                      settle=0.0, reader=RecordingReader())
    errors = []
    w.error.connect(errors.append)
    refuse = {"on": True}

    def hook(name):  # results fail half-way through a set; the ledger and error log fail too
        if refuse["on"] and not name.endswith(".npy"):
            raise OSError(err, "simulated")

    results.set_fault_hook(hook)
    try:
        stop = threading.Event()
        t = threading.Thread(target=w.run, args=(stop,), daemon=True)
        t.start()
        for v in (1, 2, 3):
            (src / f"i{v}.tif").write_bytes(tiff_bytes(v))
            time.sleep(0.005)
        time.sleep(0.5)
        assert t.is_alive() and errors  # reported, still watching
        assert list(out.iterdir()) == []  # nothing half-written, not even the ledger
        assert w.n_done == 0 and w.n_failed == 0
        refuse["on"] = False  # space freed / folder writable again
        t0 = time.monotonic()
        while w.n_done < 3 and time.monotonic() - t0 < 20:
            time.sleep(0.05)
        stop.set()
        t.join(10)
    finally:
        results.set_fault_hook(None)
    assert w.n_done == 3 and len(recon.calls) == 3  # each reconstructed once, kept meanwhile
    for k, v in enumerate((1, 2, 3), start=1):
        np.testing.assert_allclose(np.load(out / f"series_{k:04d}_exit_wave.npy"), v + 1j)
    assert not [p for p in out.iterdir() if p.name.startswith(".")]
    ledger = json.loads((out / "live-ledger.json").read_text())
    assert {s["status"] for s in ledger["series"].values()} == {"done"}
    logged = [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]
    assert logged and {e["kind"] for e in logged} == {"output"}  # written once it could be
    assert "simulated" in logged[0]["error"] and "written again" in logged[0]["error"]


def test_errors_log_and_ledger_never_write_through_a_link(tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    out.mkdir()
    outside = tmp_path / "outside.txt"
    outside.write_text("precious")
    (out / "errors.jsonl").symlink_to(outside)
    (out / "live-ledger.json").symlink_to(tmp_path / "nowhere.json")  # a dangling link
    w = FolderWatcher(src, out, Grouping("count", n_images=1), FakeReconstruct(fail_on=5.0),
                      settle=0.0, reader=RecordingReader())
    (src / "a.tif").write_bytes(tiff_bytes(5))
    _poll_for(w, 0.2)
    assert w.n_failed == 1
    assert outside.read_text() == "precious" and not (tmp_path / "nowhere.json").exists()
    assert not (out / "errors.jsonl").is_symlink() and not (out / "live-ledger.json").is_symlink()
    assert "simulated reconstruction failure" in (out / "errors.jsonl").read_text()
