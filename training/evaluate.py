"""Evaluate a network (ONNX file or Keras checkpoint) on a simulated data set.

Per sample: RMSE of the real and imaginary parts, Delta (Eq. A.1), the Y-scramble baseline
(the prediction against another sample's truth) and the peak-position error in pm (peaks of
``|pred - 1|`` matched to the true atomic columns). Writes ``summary.json`` (medians and
per-sample values), ``histograms.png`` and ``argand.png``. All numbers come from
:mod:`napari_exitwave.metrics`, the same code for every model and baseline.

The focal series are the data set's stored ones (``images``) when present and no parameter
ranges are overridden, else series drawn with a fixed seed from the (overridden) ranges; each is cropped to the centred region whose sides are multiples of the
network's ``size_multiple``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np

from napari_exitwave import metrics, physics

__all__ = ["load_predictor", "evaluate_arrays", "evaluate", "evaluate_run", "plot_histograms",
           "HEADLINE_KEYS", "headline"]

HEADLINE_KEYS = ("n_samples", "rmse_real", "rmse_imag", "delta", "yscramble_rmse_real",
                 "yscramble_rmse_imag", "peak_error_pm", "peak_error_pm_p90",
                 "missed_columns_fraction")
"""The medians of a summary that a run's state, a model card and the CLI report."""


def headline(summary: dict[str, Any]) -> dict[str, Any]:
    """The :data:`HEADLINE_KEYS` of an evaluation summary (``None`` where absent)."""
    return {k: summary.get(k) for k in HEADLINE_KEYS}

Predictor = Callable[[np.ndarray], np.ndarray]


def load_predictor(model_path: str | os.PathLike) -> tuple[Predictor, dict[str, Any]]:
    """A function ``(B, H, W, n) float32 -> (B, H, W, 2)`` and info for an ONNX file, a
    ``.keras`` file or a training run directory.

    ``info`` holds ``n_images``, ``size_multiple``, ``sampling`` (when known) and ``kind``.
    """
    path = Path(model_path)
    if path.suffix == ".onnx" or path.with_suffix(".onnx").exists() and path.suffix == ".json":
        # the plugin's own inference path (card, session, tiling), on the CPU
        from napari_exitwave.inference import OnnxReconstructor

        rec = OnnxReconstructor(path.with_suffix(".onnx"), providers="cpu", verify=False)
        card = rec.card

        def predict(x: np.ndarray) -> np.ndarray:
            out = []
            for xb in np.asarray(x, np.float32):
                wave = rec.predict(np.moveaxis(xb, -1, 0), tile=max(xb.shape[:2]))
                out.append(np.stack([wave.real, wave.imag], axis=-1))
            return np.stack(out).astype(np.float32)

        return predict, dict(kind="onnx", path=str(card.onnx_path), n_images=int(card.n_images),
                             size_multiple=int(card.size_multiple or 16),
                             sampling=card.sampling, card=card.to_dict())
    from .checkpoint import keras_predictor, load_checkpoint

    model, state = load_checkpoint(path)
    net = state.get("config", {}).get("network", {})
    depth = int(net.get("depth") or sum(1 for la in model.layers if la.name.startswith("pool")))
    return keras_predictor(model), dict(kind="keras", path=str(path),
                                        n_images=int(model.input_shape[-1]),
                                        size_multiple=2**depth,
                                        sampling=state.get("data", {}).get("sampling"))


def _to_complex(y: np.ndarray) -> np.ndarray:
    return (y[..., 0] + 1j * y[..., 1]).astype(np.complex64)


def evaluate_arrays(predict: Predictor, data: dict[str, Any], *, n_images: int, multiple: int,
                    seed: int = 7919, out_dir: str | os.PathLike | None = None,
                    ranges: physics.ParameterRanges | None = None, max_samples: int | None = None,
                    argand_samples: int = 20, batch_size: int = 4,
                    title: str = "", use_stored_images: bool = True) -> dict[str, Any]:
    """Evaluate ``predict`` on the samples of ``data`` (from :func:`~.feed.load_waves`).

    Returns the summary dict (also written to ``out_dir/summary.json`` with the plots).
    """
    from .feed import FocalSeriesDataset

    n = len(data["wave"]) if max_samples is None else min(max_samples, len(data["wave"]))
    if n < 2:
        raise ValueError("evaluation needs at least 2 samples (for the Y-scramble baseline)")
    ds = FocalSeriesDataset(data["wave"][:n], data["target"][:n], data["sampling"], n_images,
                            1, None, multiple, seed=seed, ranges=ranges, fixed=True,
                            images=(data["images"][:n] if use_stored_images
                                    and data.get("images") is not None else None))
    sampling = float(data["sampling"])
    ny, nx = data["target"].shape[-2:]
    h, w = ds.full
    y0, x0 = (ny - h) // 2, (nx - w) // 2
    preds, trues = [], []
    for start in range(0, n, batch_size):
        pairs = [ds.sample(i, i) for i in range(start, min(n, start + batch_size))]
        x = np.stack([p[0] for p in pairs])
        out = np.asarray(predict(x))
        preds.extend(_to_complex(out))
        trues.extend(_to_complex(np.stack([p[1] for p in pairs])))
    preds, trues = np.stack(preds), np.stack(trues)
    rr, ri = metrics.rmse(preds, trues)
    dl = metrics.delta(preds, trues)
    sr, si = metrics.y_scramble(preds, trues, seed=seed)
    peak_err, missed, n_cols, argand_pred, argand_true = [], [], 0, [], []
    columns = data.get("columns")
    per_sample_peak = np.full(n, np.nan)
    if columns is not None:
        for i in range(n):
            cols = np.asarray(columns[i], float).reshape(-1, 2) - np.array([y0, x0]) * sampling
            err, true_m, pred_m, n_missed = metrics.peak_position_error(
                preds[i], cols, sampling, return_matches=True)
            peak_err.append(err)
            missed.append(n_missed)
            n_cols += len(true_m) + n_missed
            if len(err):
                per_sample_peak[i] = float(np.median(err))
            if i < argand_samples and len(true_m):
                argand_pred.append(metrics.peak_values(preds[i], pred_m / sampling))
                argand_true.append(metrics.peak_values(trues[i], true_m / sampling))
    all_err = np.concatenate(peak_err) if peak_err else np.zeros(0)
    summary: dict[str, Any] = dict(
        n_samples=int(n),
        rmse_real=float(np.median(rr)), rmse_imag=float(np.median(ri)),
        delta=float(np.median(dl)),
        yscramble_rmse_real=float(np.median(sr)), yscramble_rmse_imag=float(np.median(si)),
        peak_error_pm=float(np.median(all_err)) if all_err.size else None,
        peak_error_pm_p90=float(np.percentile(all_err, 90)) if all_err.size else None,
        missed_columns_fraction=(float(np.sum(missed) / n_cols) if n_cols else None),
        peak_finder=metrics.PEAK_FINDER, sampling=sampling, region_px=[int(h), int(w)],
        percentiles=metrics.summarize(dict(rmse_real=rr, rmse_imag=ri, delta=dl,
                                           yscramble_rmse_real=sr, yscramble_rmse_imag=si)),
        per_sample=dict(rmse_real=rr.tolist(), rmse_imag=ri.tolist(), delta=dl.tolist(),
                        yscramble_rmse_real=sr.tolist(), yscramble_rmse_imag=si.tolist(),
                        peak_error_pm_median=[None if not np.isfinite(v) else float(v)
                                              for v in per_sample_peak]),
    )
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        plot_histograms(dict(rmse_real=rr, rmse_imag=ri), dict(rmse_real=sr, rmse_imag=si),
                        all_err, out_dir / "histograms.png", title=title)
        if argand_pred:
            _save_argand(np.concatenate(argand_pred), np.concatenate(argand_true),
                         out_dir / "argand.png", title=title)
        (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _save_argand(pred_vals: np.ndarray, true_vals: np.ndarray, path: Path, title: str = ""):
    values = np.concatenate([true_vals, pred_vals])
    labels = ["truth"] * len(true_vals) + ["prediction"] * len(pred_vals)
    try:
        from napari_exitwave.argand import save_argand_png

        return save_argand_png(values, str(path), labels=labels,
                               title=title or "peak values (Argand)")
    except ImportError:
        from matplotlib.figure import Figure

        fig = Figure(figsize=(4, 4), dpi=120)
        ax = fig.add_subplot()
        ax.scatter(true_vals.real, true_vals.imag, s=6, label="truth")
        ax.scatter(pred_vals.real, pred_vals.imag, s=6, label="prediction")
        ax.set_xlabel("Re psi")
        ax.set_ylabel("Im psi")
        ax.legend()
        fig.savefig(path)
        return str(path)


def plot_histograms(model: dict[str, np.ndarray], scramble: dict[str, np.ndarray],
                    peak_errors_pm: np.ndarray, path: str | os.PathLike, title: str = "") -> Path:
    """Histograms of the per-sample RMSE (model vs Y-scramble) and of the peak errors."""
    from matplotlib.figure import Figure

    n_panels = 3 if len(peak_errors_pm) else 2
    fig = Figure(figsize=(4 * n_panels, 3.2), dpi=110)
    for k, key in enumerate(("rmse_real", "rmse_imag")):
        ax = fig.add_subplot(1, n_panels, k + 1)
        both = np.concatenate([model[key], scramble[key]])
        bins = np.logspace(np.log10(max(both.min(), 1e-6)), np.log10(both.max() + 1e-12), 30)
        ax.hist(model[key], bins=bins, alpha=0.7, label=f"model (median {np.median(model[key]):.4f})")
        ax.hist(scramble[key], bins=bins, alpha=0.5,
                label=f"Y-scramble ({np.median(scramble[key]):.4f})")
        ax.set_xscale("log")
        ax.set_xlabel(f"RMSE, {'real' if key == 'rmse_real' else 'imaginary'} part")
        ax.set_ylabel("samples")
        ax.legend(fontsize=7)
    if len(peak_errors_pm):
        ax = fig.add_subplot(1, n_panels, 3)
        ax.hist(peak_errors_pm, bins=30)
        ax.set_xlabel("peak position error (pm)")
        ax.set_ylabel("columns")
        ax.set_title(f"median {np.median(peak_errors_pm):.1f} pm", fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    return path


def evaluate(model_path: str | os.PathLike, data_path: str | os.PathLike,
             out_dir: str | os.PathLike, *, max_samples: int | None = None, seed: int = 7919,
             ranges: dict | None = None) -> dict[str, Any]:
    """Evaluate a model file on a data set; writes the summary and plots to ``out_dir``."""
    from .feed import load_waves

    predict, info = load_predictor(model_path)
    data = load_waves(data_path, max_samples)
    if info.get("sampling") and abs(float(info["sampling"]) - data["sampling"]) > 0.02 * data["sampling"]:
        raise ValueError(f"the model expects {info['sampling']} A/px, the data set has "
                         f"{data['sampling']} A/px")
    pr = physics.ParameterRanges.from_dict({**physics.ParameterRanges().to_dict(),
                                            **(data["config"].get("ranges") or {}),
                                            **(ranges or {})})
    summary = evaluate_arrays(predict, data, n_images=info["n_images"],
                              multiple=info["size_multiple"], seed=seed, out_dir=out_dir,
                              ranges=pr, title=Path(model_path).stem,
                              use_stored_images=not ranges)
    summary["model"] = {k: v for k, v in info.items() if k != "card"}
    summary["dataset"] = str(data_path)
    Path(out_dir, "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    return summary


def evaluate_run(run_dir: str | os.PathLike, which: str = "best") -> dict[str, Any] | None:
    """Evaluate a finished run's ``best`` checkpoint on its validation set, into its state.

    Writes ``run_dir/evaluation/`` and ``state["metrics"]`` (the medians the export copies into
    the model card). Returns the metrics, or ``None`` when the run has no validation set.
    """
    from .checkpoint import atomic_write_json, keras_predictor, load_checkpoint
    from .feed import load_waves
    from .network import size_multiple

    run_dir = Path(run_dir)
    model, state = load_checkpoint(run_dir, which)
    cfg = state.get("config", {})
    if not cfg.get("val"):
        return None
    va = load_waves(cfg["val"], cfg.get("val_samples"))
    ranges = physics.ParameterRanges.from_dict(state.get("data", {}).get("ranges")
                                               or physics.ParameterRanges().to_dict())
    summary = evaluate_arrays(keras_predictor(model), va, n_images=cfg["network"]["n_images"],
                              multiple=size_multiple(int(cfg["network"].get("depth", 4))),
                              seed=int(cfg.get("seed", 0)) + 7919, out_dir=run_dir / "evaluation",
                              ranges=ranges, use_stored_images=not cfg.get("ranges"))
    state["metrics_checkpoint"] = which
    state["metrics"] = headline(summary)
    atomic_write_json(state, run_dir / "state.json")
    return state["metrics"]

