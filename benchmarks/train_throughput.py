"""Training and inference throughput of the exit-wave network at 256 x 256 px.

Measures, for each network preset, focal series per second (one "image" here is one input
sample: a 256 x 256 focal series of n_images images) of
- a training step (forward + backward + RMSprop update, batch ``--batch``),
- Keras inference (batch ``--batch``),
- ONNX Runtime CPU inference of the exported model (batch 1),
and of the on-the-fly data pipeline (new microscope parameters + simulated, normalised series,
one thread). Prints a Markdown table and appends it, with date and machine, to ``--record``.

    python benchmarks/train_throughput.py --presets small paper --record docs/training.md
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np


def _rate(fn, n_items: int, min_seconds: float, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    count, t0 = 0, time.perf_counter()
    while True:
        fn()
        count += 1
        elapsed = time.perf_counter() - t0
        if elapsed >= min_seconds and count >= 2:
            return count * n_items / elapsed


def bench_preset(preset: str, size: int, batch: int, n_images: int, seconds: float) -> dict:
    import keras
    import onnxruntime as ort

    from exitwave_training.export import export_onnx
    from exitwave_training.network import PRESETS, NetworkConfig, build_network

    keras.utils.set_random_seed(0)
    cfg = NetworkConfig(n_images=n_images, **PRESETS[preset])
    model = build_network(cfg)
    model.compile(optimizer=keras.optimizers.RMSprop(5e-4), loss="mse")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, size, size, n_images)).astype("float32")
    y = rng.standard_normal((batch, size, size, 2)).astype("float32")
    train = _rate(lambda: model.train_on_batch(x, y), batch, seconds)
    infer = _rate(lambda: model.predict_on_batch(x), batch, seconds)
    with tempfile.TemporaryDirectory() as tmp:
        path = export_onnx(model, os.path.join(tmp, "m.onnx"))
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        x1 = x[:1]
        onnx_rate = _rate(lambda: sess.run(None, {"images": x1}), 1, seconds)
    return dict(preset=preset, depth=cfg.depth, filters=cfg.base_filters,
                params=model.count_params(), train=train, keras=infer, onnx=onnx_rate)


def bench_data(size: int, n_images: int, seconds: float) -> float:
    from napari_exitwave import physics

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size] * 0.105
    phase = sum(0.5 * np.exp(-((yy - a) ** 2 + (xx - b) ** 2) / 0.1)
                for a, b in rng.uniform(2, size * 0.105 - 2, (60, 2)))
    wave = np.exp(1j * phase).astype(np.complex64)

    def one():
        p = physics.sample_parameters(rng, n_images)
        physics.normalize_series(physics.simulate_focal_series(wave, 0.105, p, rng=rng))

    return _rate(one, 1, seconds)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="+", default=["small", "medium", "paper"])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--n-images", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=5.0, help="minimum timing per figure")
    ap.add_argument("--record", help="append the table to this Markdown file")
    args = ap.parse_args(argv)

    from exitwave_training.train import machine_description

    m = machine_description()
    rows = [bench_preset(p, args.size, args.batch, args.n_images, args.seconds)
            for p in args.presets]
    data_rate = bench_data(args.size, args.n_images, args.seconds)
    when = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"Measured {when} on `{m['host']}` ({m['processor']}, {m['cpu_count']} CPUs, "
        f"GPUs: {', '.join(m['gpus']) or 'none'}; Keras {m['keras']} / {m['backend']}"
        f"{' ' + m.get('tensorflow', '') if m.get('tensorflow') else ''}), "
        f"{args.size} x {args.size} px, {args.n_images} images per series, "
        f"batch {args.batch} (ONNX: batch 1). Series per second:",
        "",
        "| preset | depth | filters | parameters | training | Keras inference | ONNX Runtime CPU |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['preset']} | {r['depth']} | {r['filters']} | {r['params']:,} | "
                     f"{r['train']:.2f} | {r['keras']:.2f} | {r['onnx']:.2f} |")
    lines += ["", f"On-the-fly data (new parameters + simulated, normalised series, one "
                  f"thread): {data_rate:.1f} series/s.", ""]
    text = "\n".join(lines)
    print(text)
    if args.record:
        with open(args.record, "a", encoding="utf-8") as f:
            f.write("\n" + text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
