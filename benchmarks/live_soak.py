"""Soak test of the live watcher: a rough acquisition, kills, a disk that fills; nothing lost.

Writer threads act as the microscope's acquisition software, the watcher runs in a separate
process (``napari_exitwave.live.FolderWatcher`` with a fast stand-in reconstruction), and this
script keeps doing to it what happens at a real microscope:

- bursts of series written at once, and slow writers that write each file in chunks with
  pauses longer than the poll interval;
- pauses between the images of a series longer than the poll interval;
- stacks (ImageJ and plain multi-page TIFF) written page by page with pauses;
- files deleted in the middle of their writing (and written again afterwards);
- corrupt files (their series must fail with a reason, and only those);
- the watcher killed (SIGKILL) at random moments and restarted on the same output folder;
- an output disk that fills up and frees again: a small tmpfs filled with a ballast file when run
  as root and ``mount`` works (``--disk tmpfs``), else ``ENOSPC`` injected in the result writer
  through its test hook ``napari_exitwave.results.set_fault_hook`` (``--disk hook``).

Each series is three images named ``sNNNN_<k>.tif`` (grouping by pattern; a stack is one file
``sNNNN_0.tif`` with three pages) whose pixels are constants known in advance, so every output
can be checked. At the end the watcher runs once more until idle and the script counts, from the
ledger and the output folder:

``intended``  series written; ``done once`` series whose output exists once, with the right
files and the right exit wave; ``failed (reason)`` series reported failed with an error
(must be exactly the corrupt ones); ``lost`` intended series neither done nor failed;
``duplicated`` files used in more than one series, or outputs of series that were never
written; ``wrong`` outputs with the wrong content or files. It must show 0 lost, 0 duplicated
and 0 wrong. Run::

    python benchmarks/live_soak.py                 # 300 series, a few minutes
    python benchmarks/live_soak.py --series 40 --quick
"""

from __future__ import annotations

import argparse
import errno
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

NY = NX = 32
PATTERN = r"^(?P<series>s\d{4})_(?P<index>\d)\.tif$"
FULL_FLAG = "disk-full"


# ----------------------------------------------------------------------------- the watcher side
def _fake_reconstruct(series):
    """Exit wave = mean image + 1j * number of images (checked at the end); ~10 ms."""
    images = np.asarray(series.images, np.float32)
    time.sleep(0.01)
    wave = (images.mean(axis=0) + 1j * images.shape[0]).astype(np.complex64)
    return type("Rec", (), {"exit_wave": wave, "sampling": 0.1, "method": "fake",
                            "model_name": "soak", "device": "CPU", "timings": {},
                            "warnings": [], "shifts": None})()


def _reader(path):
    import tifffile

    from napari_exitwave.io import FocalSeries

    images = tifffile.imread(path).astype(np.float32)  # TiffFile raises on a broken file
    return FocalSeries(images if images.ndim == 3 else images[None], 0.1, "A", None, {},
                       str(path))


def watcher_main(src: str, out: str, poll: float, work: str) -> None:
    """Run in the watcher process until killed or idle (``--idle-exit``)."""
    from napari_exitwave import results
    from napari_exitwave.live import FolderWatcher, Grouping

    flag = Path(work) / FULL_FLAG

    def full(name):  # --disk hook: the disk is "full" while the flag file exists
        if flag.exists():
            raise OSError(errno.ENOSPC, "No space left on device (injected)")

    if os.environ.get("SOAK_DISK") == "hook":
        results.set_fault_hook(full)
    w = FolderWatcher(src, out, Grouping("pattern", n_images=3, pattern=PATTERN),
                      _fake_reconstruct, poll_interval=poll, reader=_reader,
                      stack_settle=max(2.0, 6 * poll), max_read_attempts=6)
    idle = os.environ.get("SOAK_IDLE_EXIT")
    w.run(idle_exit=float(idle) if idle else None)


# ----------------------------------------------------------------------------- the microscope
def _tiff(values, imagej: bool = False, plain_pages: bool = False) -> tuple[bytes, list[int]]:
    import tifffile

    b = io.BytesIO()
    data = np.stack([np.full((NY, NX), v, np.float32) for v in values])
    if plain_pages:
        with tifffile.TiffWriter(b) as tw:
            for page in data:
                tw.write(page, description="", metadata=None, contiguous=False)
    elif imagej:
        tifffile.imwrite(b, data, imagej=True)
    else:
        tifffile.imwrite(b, data[0] if len(data) == 1 else data)
    raw = b.getvalue()
    with tifffile.TiffFile(io.BytesIO(raw)) as tif:
        ends = [max(o + c for o, c in zip(p.dataoffsets, p.databytecounts)) for p in tif.pages]
    return raw, ends


def _write_chunked(path: Path, raw: bytes, cuts: list[int], pause) -> None:
    with open(path, "wb") as f:
        start = 0
        for end in cuts + [len(raw)]:
            f.write(raw[start:end])
            f.flush()
            start = end
            if end < len(raw):
                time.sleep(pause())


def write_series(src: Path, sid: int, kind: str, rng: random.Random, poll: float) -> None:
    """Write one series of the given kind (see the module docstring)."""
    name = f"s{sid:04d}"
    values = [10.0 * sid + k for k in range(3)]
    long_pause = lambda: rng.uniform(1.5 * poll, 6 * poll)  # noqa: E731
    if kind in ("stack_imagej", "stack_plain"):
        raw, ends = _tiff(values, imagej=kind == "stack_imagej",
                          plain_pages=kind == "stack_plain")
        _write_chunked(src / f"{name}_0.tif", raw, ends[:-1], long_pause)
        return
    for k, v in enumerate(values):
        raw, _ = _tiff([v])
        path = src / f"{name}_{k}.tif"
        if kind == "corrupt" and k == 1:
            path.write_bytes(b"II*\x00" + bytes(rng.getrandbits(8) for _ in range(600)))
        elif kind == "burst":
            path.write_bytes(raw)
        elif kind == "rename":
            tmp = src / f".{name}_{k}.tif"
            tmp.write_bytes(raw)
            tmp.rename(path)
        elif kind == "slow":
            cuts = sorted(rng.sample(range(8, len(raw) - 1), 4))
            _write_chunked(path, raw, cuts, long_pause)
        elif kind == "deleted" and k == 2:
            with open(path, "wb") as f:  # started, stalls, deleted, written again later
                f.write(raw[: len(raw) // 3])
            time.sleep(long_pause())
            path.unlink()
            time.sleep(long_pause())
            path.write_bytes(raw)
        else:  # "paused" (and the other images of "corrupt"/"deleted")
            path.write_bytes(raw)
        if kind == "paused":
            time.sleep(long_pause())


KINDS = ["burst", "rename", "slow", "paused", "stack_imagej", "stack_plain", "deleted",
         "corrupt"]
WEIGHTS = [4, 2, 3, 2, 1, 1, 1, 1]


# ----------------------------------------------------------------------------- the disk
class Disk:
    """The output folder, and how it is made full and free again."""

    def __init__(self, work: Path, mode: str, size_mb: int = 64) -> None:
        self.work, self.mode = work, mode
        self.out = work / "out"
        self.mount = None
        if mode in ("auto", "tmpfs"):
            mnt = work / "disk"
            mnt.mkdir()
            ok = hasattr(os, "geteuid") and os.geteuid() == 0 and subprocess.run(
                ["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(mnt)],
                capture_output=True).returncode == 0
            if ok:
                self.mode, self.mount, self.out = "tmpfs", mnt, mnt / "out"
            elif mode == "tmpfs":
                raise SystemExit("--disk tmpfs needs root and a working mount")
            else:
                self.mode = "hook"
        self.out.mkdir()

    def fill(self) -> None:
        if self.mode == "hook":
            (self.work / FULL_FLAG).touch()
            return
        free = shutil.disk_usage(self.mount).free
        with open(self.mount / "ballast", "wb") as f:
            try:
                while free > 0:
                    n = min(free, 1 << 20)
                    f.write(b"\0" * n)
                    free -= n
                f.flush()
                os.fsync(f.fileno())
            except OSError:
                pass  # full

    def free(self) -> None:
        (self.work / FULL_FLAG).unlink(missing_ok=True)
        if self.mount is not None:
            (self.mount / "ballast").unlink(missing_ok=True)

    def keep(self, dest: Path) -> None:
        if self.mount is not None:
            shutil.copytree(self.out, dest)
            subprocess.run(["umount", str(self.mount)], check=False)


# ----------------------------------------------------------------------------- the run
def _start_watcher(src, out, poll, work, disk_mode, idle_exit=None):
    env = dict(os.environ, SOAK_DISK=disk_mode, PYTHONUNBUFFERED="1")
    if idle_exit is not None:
        env["SOAK_IDLE_EXIT"] = str(idle_exit)
    log = open(Path(work) / "watcher.log", "a")
    return subprocess.Popen([sys.executable, __file__, "--_watcher", str(src), str(out),
                             str(poll), str(work)], env=env, stdout=log, stderr=log)


def count(out: Path, plan: dict[int, str]) -> dict:
    """Figures from the ledger and the output folder (see the module docstring)."""
    ledger = json.loads((out / "live-ledger.json").read_text())
    uses: dict[str, list[str]] = {}
    done, failed, wrong, bogus = set(), {}, [], []
    for sid, entry in ledger["series"].items():
        for f in entry["files"]:
            uses.setdefault(f, []).append(sid)
        if not sid.startswith("s") or int(sid[1:]) not in plan:
            bogus.append(sid)
            continue
        n = int(sid[1:])
        stacked = plan[n].startswith("stack")
        files = [f"{sid}_0.tif"] if stacked else [f"{sid}_{k}.tif" for k in range(3)]
        if entry["status"] == "done":
            meta = json.loads((out / f"{sid}.json").read_text())
            wave = np.load(out / f"{sid}_exit_wave.npy")
            if meta["files"] != files or entry["files"] != files \
                    or not np.allclose(wave, 10.0 * n + 1 + 3j):
                wrong.append(sid)
            else:
                done.add(n)
        elif entry.get("error"):
            failed[n] = entry["error"]
    duplicated = sorted({f for f, sids in uses.items() if len(sids) > 1}) + bogus
    intended = set(plan)
    lost = sorted(intended - done - set(failed))
    should_fail = {n for n, k in plan.items() if k == "corrupt"}
    leftovers = [p.name for p in out.iterdir() if p.name.startswith(".")]
    return {"intended": len(intended), "done_once": len(done), "failed_with_reason": len(failed),
            "failed_not_corrupt": sorted(set(failed) - should_fail),
            "corrupt_not_failed": sorted(should_fail - set(failed)),
            "lost": len(lost), "lost_ids": lost[:20], "duplicated": len(duplicated),
            "duplicated_ids": duplicated[:20], "wrong": len(wrong), "wrong_ids": wrong[:20],
            "temp_files_left": leftovers}


def run_soak(n_series: int = 300, seed: int = 0, poll: float = 0.1, writers: int = 6,
             kill_every: tuple[float, float] = (2.0, 6.0), full_every: tuple[float, float] =
             (4.0, 10.0), full_for: tuple[float, float] = (1.0, 3.0), disk: str = "auto",
             work: str | os.PathLike | None = None, keep: bool = False) -> dict:
    """Run the soak; return its figures (and the counts of kills and disk-full periods)."""
    rng = random.Random(seed)
    work = Path(work or tempfile.mkdtemp(prefix="live-soak-"))
    src = work / "in"
    src.mkdir(parents=True, exist_ok=True)
    d = Disk(work, disk)
    plan = {i: rng.choices(KINDS, WEIGHTS)[0] for i in range(1, n_series + 1)}
    todo = list(plan)
    lock = threading.Lock()

    def writer(k: int) -> None:
        wrng = random.Random(seed * 1000 + k)
        while True:
            with lock:
                if not todo:
                    return
                sid = todo.pop(0)
            write_series(src, sid, plan[sid], wrng, poll)
            if wrng.random() < 0.3:
                time.sleep(wrng.uniform(0, 3 * poll))

    t0 = time.monotonic()
    threads = [threading.Thread(target=writer, args=(k,), daemon=True) for k in range(writers)]
    for t in threads:
        t.start()
    proc = _start_watcher(src, d.out, poll, work, d.mode)
    kills = fills = 0
    next_kill = time.monotonic() + rng.uniform(*kill_every)
    next_full = time.monotonic() + rng.uniform(*full_every)
    full_until = None
    while any(t.is_alive() for t in threads):
        time.sleep(0.05)
        now = time.monotonic()
        if now >= next_kill:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills += 1
            time.sleep(rng.uniform(0, 2 * poll))
            proc = _start_watcher(src, d.out, poll, work, d.mode)
            next_kill = now + rng.uniform(*kill_every)
        if full_until is None and now >= next_full:
            d.fill()
            fills += 1
            full_until = now + rng.uniform(*full_for)
        elif full_until is not None and now >= full_until:
            d.free()
            full_until = None
            next_full = now + rng.uniform(*full_every)
    d.free()
    write_s = time.monotonic() - t0
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # the last run: no kills, a free disk, until nothing arrives and nothing is pending
    final = _start_watcher(src, d.out, poll, work, d.mode, idle_exit=max(3.0, 30 * poll))
    final.wait(timeout=600)
    figures = count(d.out, plan)
    figures.update(kinds={k: sum(v == k for v in plan.values()) for k in KINDS}, kills=kills,
                   disk_full_periods=fills, disk=d.mode, writers=writers, poll_s=poll,
                   acquisition_s=round(write_s, 1), total_s=round(time.monotonic() - t0, 1),
                   final_exit=final.returncode)
    if keep:
        d.keep(work / "out-kept")
    elif d.mount is not None:
        subprocess.run(["umount", str(d.mount)], check=False)
    if not keep:
        shutil.rmtree(work, ignore_errors=True)
    return figures


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--series", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--poll", type=float, default=0.1, help="watcher poll interval (s)")
    p.add_argument("--writers", type=int, default=6, help="concurrent writer threads")
    p.add_argument("--disk", choices=("auto", "tmpfs", "hook"), default="auto")
    p.add_argument("--quick", action="store_true", help="kills and disk-full periods more often")
    p.add_argument("--keep", help="keep the work folder here")
    p.add_argument("--json", help="write the figures to this file")
    p.add_argument("--_watcher", nargs=4, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args._watcher:
        src, out, poll, work = args._watcher
        watcher_main(src, out, float(poll), work)
        return 0
    kw = {"kill_every": (1.0, 3.0), "full_every": (2.0, 4.0)} if args.quick else {}
    fig = run_soak(args.series, args.seed, args.poll, args.writers, disk=args.disk,
                   work=args.keep, keep=bool(args.keep), **kw)
    for key in ("intended", "done_once", "failed_with_reason", "lost", "duplicated", "wrong"):
        print(f"{key:20s} {fig[key]}")
    print(f"{'kills':20s} {fig['kills']}\n{'disk-full periods':20s} {fig['disk_full_periods']}"
          f" ({fig['disk']})\n{'time':20s} {fig['total_s']} s (acquisition {fig['acquisition_s']}"
          " s)")
    bad = {k: fig[k] for k in ("lost_ids", "duplicated_ids", "wrong_ids", "failed_not_corrupt",
                               "corrupt_not_failed", "temp_files_left") if fig[k]}
    if bad:
        print("PROBLEMS:", json.dumps(bad))
    if args.json:
        Path(args.json).write_text(json.dumps(fig, indent=1))
    return 1 if bad or fig["lost"] or fig["duplicated"] or fig["wrong"] else 0


if __name__ == "__main__":
    sys.exit(main())
