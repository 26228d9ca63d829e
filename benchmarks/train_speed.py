"""Training speed on this machine: seconds per update by backend, XLA and thread count.

The accuracy rows of ``train_budget.py`` differ by seed noise at the budgets 2 cores allow;
the speed of one update does not, and it sets how many samples a session's budget buys.
Every row trains the same network (``--preset``, default the shipped medium U-Net) with Adam
1e-3 and MSE on the same batches of focal series (cut from ``--train`` by the training feed,
``--batch-size`` x ``--crop`` px), each in its own process (backend, XLA and threads are
fixed at start-up): a few warm-up updates (compilation), then ``--steps`` timed ones.
The feed row is the time to make one such batch (one thread), for comparison.

    python benchmarks/train_speed.py --train data/mosg-train.zarr \\
        [--backend-python /path/to/venv/bin/python] [--doc docs/training.md]

``--backend-python`` is an interpreter with keras and torch and/or jax (not TensorFlow: they
need not share the project's environment; rows whose backend it lacks are reported as
skipped). Results: ``<out>/speed.json`` and, with ``--doc``, the table between the
``<!-- train_speed -->`` markers. Run it on an otherwise idle machine: rows run one after the
other and the load average before each is recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _doc_block import update_block

HERE = Path(__file__).resolve().parent
TRAINING = HERE.parent / "training"

# name -> (what, backend, jit_compile, environment)
ROWS: dict[str, tuple[str, str, bool, dict[str, str]]] = {
    "tf": ("TensorFlow, default threads (what the shipped recipes use)", "tensorflow", False, {}),
    "tf-xla": ("TensorFlow with XLA (`--jit-compile`)", "tensorflow", True, {}),
    "tf-1thread": ("TensorFlow, 1 intra-op and 1 inter-op thread", "tensorflow", False,
                   {"TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1"}),
    "tf-2threads": ("TensorFlow, 2 intra-op threads, 1 inter-op", "tensorflow", False,
                    {"TF_NUM_INTRAOP_THREADS": "2", "TF_NUM_INTEROP_THREADS": "1"}),
    "torch": ("PyTorch (KERAS_BACKEND=torch), eager", "torch", False, {}),
    "torch-1thread": ("PyTorch, eager, 1 thread", "torch", False, {"OMP_NUM_THREADS": "1"}),
    "jax": ("JAX (KERAS_BACKEND=jax), jit", "jax", True, {}),
}

# whole training runs (`exitwave-train train`, feed and trainer sharing the cores): name ->
# (what, extra train options, environment)
THREADS_1 = {"TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1"}
FIT_ROWS: dict[str, tuple[str, list[str], dict[str, str]]] = {
    "fit": ("feed in 1 thread (`--workers 1`, the CLI's default before 2026-12-04) beside "
            "TensorFlow's default threads", [], {}),
    "fit-tf1": ("TensorFlow in 1 thread (1 intra-op, 1 inter-op) beside the feed's thread",
                [], THREADS_1),
    "fit-tf2-inter1": ("TensorFlow 2 intra-op threads, 1 inter-op, beside the feed's thread", [],
                       {"TF_NUM_INTRAOP_THREADS": "2", "TF_NUM_INTEROP_THREADS": "1"}),
    "fit-workers2": ("feed in 2 threads (`--workers 2`: the shipped recipes' and now the CLI's "
                     "default), TensorFlow's default threads",
                     ["--workers", "2"], {}),
    "fit-tf1-crops2": ("TensorFlow in 1 thread, 2 crops per simulated series (half the feed)",
                       ["--crops-per-series", "2"], THREADS_1),
}

# the child: build the network of training/network.py (keras only), time the updates
CHILD = r"""
import importlib.util, json, sys, time
import numpy as np
# training/ as the package exitwave_training without installing it (network.py is keras-only)
spec = importlib.util.spec_from_file_location(
    "exitwave_training", sys.argv[1] + "/__init__.py", submodule_search_locations=[sys.argv[1]])
sys.modules["exitwave_training"] = importlib.util.module_from_spec(spec)
import exitwave_training.network as network
import keras
cfg = json.loads(sys.argv[3])
data = np.load(sys.argv[2])
x, y = data["x"], data["y"]
keras.utils.set_random_seed(0)
model = network.build_network(network.NetworkConfig(**cfg["network"]))
model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse", jit_compile=cfg["jit"])
t = time.perf_counter()
for i in range(cfg["warmup"]):
    model.train_on_batch(x[i % len(x)], y[i % len(y)])
warm = time.perf_counter() - t
times = []
for i in range(cfg["steps"]):
    t = time.perf_counter()
    loss = model.train_on_batch(x[i % len(x)], y[i % len(y)])
    times.append(time.perf_counter() - t)
print("RESULT " + json.dumps(dict(
    seconds_per_step=float(np.median(times)), min_step=float(np.min(times)),
    warmup_seconds=warm, loss=float(np.asarray(loss).ravel()[0]),
    backend=keras.backend.backend(), keras=keras.__version__)))
"""


def make_batches(train: str, preset: str, batch: int, crop: int, n: int, path: Path) -> float:
    """``n`` training batches of the feed into ``path`` (npz); seconds per batch (one thread)."""
    import numpy as np

    from exitwave_training.feed import FocalSeriesDataset, load_waves
    from exitwave_training.presets import PRESETS

    d = load_waves(train, 4 * batch * n)
    multiple = 2 ** PRESETS[preset]["depth"]
    ds = FocalSeriesDataset(d["wave"], d["target"], d["sampling"], 3, batch, crop, multiple,
                            seed=0)
    t = time.perf_counter()
    batches = [ds[i] for i in range(n)]
    feed = (time.perf_counter() - t) / n
    np.savez(path, x=np.stack([b[0] for b in batches]), y=np.stack([b[1] for b in batches]))
    return feed


def run_row(name: str, args, batches: Path) -> dict:
    what, backend, jit, extra_env = ROWS[name]
    python = sys.executable if backend == "tensorflow" else args.backend_python
    if python is None:
        return dict(row=name, what=what, skipped="no --backend-python given")
    from exitwave_training.presets import PRESETS

    cfg = dict(network=dict(PRESETS[args.preset], n_images=3), jit=jit, warmup=args.warmup,
               steps=args.steps)
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2", **extra_env)
    load = os.getloadavg()[0]
    proc = subprocess.run([python, "-c", CHILD, str(TRAINING), str(batches), json.dumps(cfg)],
                          env=env, capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        return dict(row=name, what=what, skipped=f"failed: {tail[:160]}", load_before=load)
    res = json.loads(lines[-1][len("RESULT "):])
    res.update(row=name, what=what, load_before=load,
               samples_per_second=args.batch_size / res["seconds_per_step"])
    print(f"{name}: {res['seconds_per_step']:.3f} s per update "
          f"({res['samples_per_second']:.2f} samples/s, warm-up {res['warmup_seconds']:.1f} s, "
          f"load before {load:.2f})", flush=True)
    return res


def run_fit_row(name: str, args) -> dict:
    """A real training run of ``--fit-epochs`` epochs; samples/s over all epochs but the first."""
    what, extra, extra_env = FIT_ROWS[name]
    run = Path(args.out) / "fit" / name
    cmd = [sys.executable, "-m", "exitwave_training.cli", "train", "--train", args.train,
           "--out", str(run), "--restart", "--preset", args.preset, "--batch-size",
           str(args.batch_size), "--crop", str(args.crop), "--optimizer", "adam", "--lr", "1e-3",
           "--epochs", str(args.fit_epochs), "--steps-per-epoch", str(args.fit_steps),
           "--seed", "0", "--quiet", *extra]
    if "--workers" not in extra:
        cmd += ["--workers", "1"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONHASHSEED="0", **extra_env)
    load = os.getloadavg()[0]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        return dict(row=name, what=what, skipped=f"failed: {tail[:160]}", load_before=load)
    state = json.loads((run / "state.json").read_text())
    later = state["epoch_seconds"][1:]
    per_epoch = args.fit_steps * args.batch_size
    res = dict(row=name, what=what, command=" ".join(cmd[3:]), env=extra_env, load_before=load,
               first_epoch_seconds=state["epoch_seconds"][0], epoch_seconds=later,
               samples_per_second=per_epoch * len(later) / sum(later))
    print(f"{name}: {res['samples_per_second']:.2f} samples/s in training (epochs after the "
          f"first: {', '.join(f'{t:.1f}' for t in later)} s; load before {load:.2f})", flush=True)
    return res


def fit_table(res: dict) -> str:
    when = f"{res['fit_date']}: w" if res.get("fit_date") else "W"
    lines = [f"{when}hole training runs ({res['fit_epochs']} epochs of {res['fit_steps']} updates, "
             "samples/s over the epochs after the first, which compiles): the feed and the "
             "trainer share the 2 cores.", "",
             "| row | what | samples/s | vs fit | epoch (s) | environment |",
             "|---|---|---|---|---|---|"]
    base = next((r["samples_per_second"] for r in res["fit_rows"] if r["row"] == "fit"
                 and "skipped" not in r), None)
    for r in res["fit_rows"]:
        if "skipped" in r:
            lines.append(f"| {r['row']} | {r['what']} | {r['skipped']} | | | |")
            continue
        rel = "-" if base is None else f"{r['samples_per_second'] / base:.2f}x"
        env = " ".join(f"{k}={v}" for k, v in r["env"].items()) or "-"
        mean = sum(r["epoch_seconds"]) / len(r["epoch_seconds"])
        lines.append(f"| {r['row']} | {r['what']} | {r['samples_per_second']:.2f} | {rel} | "
                     f"{mean:.1f} | {env} |")
    return "\n".join(lines)


def table(res: dict) -> str:
    head = (f"{res['date']}, {res['machine']}: the {res['preset']} U-Net, batch "
            f"{res['batch_size']} x {res['crop']} px crops, Adam + MSE, median of "
            f"{res['steps']} updates after {res['warmup']} warm-up ones, each row in its own "
            "process on the otherwise idle machine.")
    lines = [head, "", "| row | what | s per update | samples/s | vs tf | first updates (s) |",
             "|---|---|---|---|---|---|"]
    base = next((r["seconds_per_step"] for r in res["rows"] if r["row"] == "tf"
                 and "skipped" not in r), None)
    for r in res["rows"]:
        if "skipped" in r:
            lines.append(f"| {r['row']} | {r['what']} | {r['skipped']} | | | |")
            continue
        rel = "-" if base is None else f"{base / r['seconds_per_step']:.2f}x"
        lines.append(f"| {r['row']} | {r['what']} | {r['seconds_per_step']:.3f} "
                     f"| {r['samples_per_second']:.2f} | {rel} | {r['warmup_seconds']:.1f} |")
    f = res["feed_seconds_per_batch"]
    lines.append(f"| feed | making one batch in the training feed (one thread) | {f:.3f} | "
                 f"{res['batch_size'] / f:.2f} | | |")
    if res.get("fit_rows"):
        lines += ["", fit_table(res)]
    return "\n".join(lines)


def main(argv=None) -> int:
    from train_budget import machine

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train", required=True, help="data set the batches are cut from")
    p.add_argument("--out", default="data/budget")
    p.add_argument("--preset", default="medium")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--crop", type=int, default=128)
    p.add_argument("--steps", type=int, default=12, help="timed updates per row")
    p.add_argument("--warmup", type=int, default=3, help="untimed first updates (compilation)")
    p.add_argument("--only", nargs="*", choices=list(ROWS),
                   help="update-timing rows to run (default all; none with --only alone)")
    p.add_argument("--backend-python", help="interpreter with keras + torch/jax")
    p.add_argument("--fit", nargs="*", choices=list(FIT_ROWS), metavar="ROW",
                   help="also whole training runs (all of them with no names): "
                        + ", ".join(FIT_ROWS))
    p.add_argument("--fit-epochs", type=int, default=3)
    p.add_argument("--fit-steps", type=int, default=25, help="updates per epoch of a fit row")
    p.add_argument("--doc", help="Markdown file whose train_speed block gets the table")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        batches = Path(tmp) / "batches.npz"
        feed = make_batches(args.train, args.preset, args.batch_size, args.crop, 4, batches)
        print(f"feed: {feed:.3f} s per batch of {args.batch_size}", flush=True)
        names = list(ROWS) if args.only is None else args.only
        rows = [run_row(name, args, batches) for name in names]
    fit_rows = [] if args.fit is None else [run_fit_row(n, args) for n in args.fit or FIT_ROWS]
    res = dict(date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), machine=machine(),
               preset=args.preset, batch_size=args.batch_size, crop=args.crop, steps=args.steps,
               warmup=args.warmup, feed_seconds_per_batch=feed, rows=rows,
               fit_rows=fit_rows, fit_epochs=args.fit_epochs, fit_steps=args.fit_steps,
               fit_date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
    (out / "speed.json").write_text(json.dumps(res, indent=2) + "\n")
    print(table(res))
    if args.doc:
        update_block(Path(args.doc), table(res), "<!-- train_speed -->", "<!-- /train_speed -->")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    sys.exit(main())
