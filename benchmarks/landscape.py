"""Landscape benchmark: permutation alignment of many replicas, and batched loss probes vs a per-point loop.

1. **Alignment**: R replicas (default 64) of an MLP ``D → 256 → 256 → 10`` (digits, D = 64), each a
   trained-like network: a shared random network plus independent noise, hidden units randomly permuted.
   Times weight matching of every replica to replica 0 (R − 1 matchings, as ``minima align=reference``)
   and of ``--pairs`` pairs (to extrapolate ``align=pairwise``); reports the mean distance before and
   after alignment and the coordinate-ascent sweeps.
2. **Probes**: loss profiles of random filter-normalised directions around one network on the digits
   training set (1,437 samples): ``directions × points`` parameter vectors evaluated by
   :class:`trajkit.experiments.rebuild.Rebuilt` in batches (``batched_forward``: stacked GEMMs), against a
   plain loop that loads each vector into the module and runs a forward pass — the same vectors, the same
   run. Reports vectors per second for both and their ratio, and checks that the losses agree, for the
   256-wide MLP (each vector costs ~0.25 GFLOP on the full training set: compute-bound either way) and
   for a narrow one (``--probe-widths``; per-call overhead dominates, which batching removes).

    .venv/bin/python benchmarks/landscape.py            # full (64 replicas)
    .venv/bin/python benchmarks/landscape.py --quick    # seconds, for CI
    .venv/bin/python benchmarks/landscape.py --device cuda

Timings are wall-clock on whatever machine runs this; compare the ratios, not the absolute numbers.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np
import torch

from trajkit.archive.layout import layout_from_named_parameters
from trajkit.experiments import build_dataset, build_model
from trajkit.experiments.rebuild import Rebuilt
from trajkit.landscape import apply_permutations, feedforward_spec, random_permutations
from trajkit.landscape.probes import direction_profiles, random_directions
from trajkit.landscape.weight_matching import align_vectors


def _mlp(in_features: int, width: int) -> torch.nn.Module:
    return build_model({"kind": "mlp", "in_features": in_features, "hidden": [width, width], "out_features": 10,
                        "bias": True, "activation": "relu"})


def bench_alignment(replicas: int, width: int, in_features: int, pairs: int, seed: int = 0) -> dict:
    torch.manual_seed(seed)
    model = _mlp(in_features, width)
    layout = layout_from_named_parameters(list(model.named_parameters()))
    spec = feedforward_spec(layout)
    base = torch.nn.utils.parameters_to_vector(model.parameters()).detach().numpy().astype(np.float32)
    rng = np.random.default_rng(seed)
    scale = float(np.std(base))
    ws = []
    for r in range(replicas):
        w = base + 0.5 * scale * rng.standard_normal(base.size).astype(np.float32)
        ws.append(apply_permutations(w, layout, spec, random_permutations(spec, rng)) if r else w)
    t0 = time.perf_counter()
    infos = [align_vectors(ws[0], ws[r], layout, spec)[2] for r in range(1, replicas)]
    t_ref = time.perf_counter() - t0
    pair_list = [(a, b) for a in range(replicas) for b in range(a + 1, replicas)]
    chosen = [pair_list[i] for i in rng.choice(len(pair_list), size=min(pairs, len(pair_list)), replace=False)]
    t0 = time.perf_counter()
    for a, b in chosen:
        align_vectors(ws[a], ws[b], layout, spec)
    t_pairs = time.perf_counter() - t0
    return {"replicas": replicas, "n_params": int(base.size), "width": width,
            "reference_seconds": t_ref, "seconds_per_matching": t_ref / max(1, replicas - 1),
            "pairwise_seconds_estimated": t_pairs / max(1, len(chosen)) * len(pair_list),
            "mean_distance_raw": float(np.mean([i["distance_raw"] for i in infos])),
            "mean_distance_aligned": float(np.mean([i["distance"] for i in infos])),
            "mean_sweeps": float(np.mean([i["sweeps"] for i in infos])),
            "all_converged": bool(all(i["converged"] for i in infos))}


def bench_probes(directions: int, points: int, width: int, batch: int, device: str, seed: int = 0) -> dict:
    data = build_dataset({"name": "digits"})
    torch.manual_seed(seed)
    model = _mlp(data.n_features, width).to(device)
    layout = layout_from_named_parameters(list(model.named_parameters()))
    w0 = torch.nn.utils.parameters_to_vector(model.parameters()).detach().cpu().numpy().astype(np.float32)
    rb = Rebuilt(module=model, params=w0, step=0, row=0, layout=layout, data=data, loss_name="cross_entropy",
                 device=device)
    dirs = random_directions(w0, layout, directions, "filter", seed)
    rb.loss(w0[None])  # warm-up: data on the device, kernels loaded
    t0 = time.perf_counter()
    t, batched = direction_profiles(rb.loss_fn("train"), w0, dirs, radius=0.5, points=points, batch=batch)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t_batched = time.perf_counter() - t0

    x = torch.as_tensor(data.X_train).to(device)
    y = torch.as_tensor(data.y_train).to(device)
    params = [p for p in model.parameters()]
    loop = np.empty_like(batched)
    t0 = time.perf_counter()
    with torch.no_grad():
        for j in range(directions):
            for i, ti in enumerate(t):
                vec = torch.as_tensor(w0 + np.float32(ti) * dirs[j]).to(device)
                torch.nn.utils.vector_to_parameters(vec, params)
                loop[j, i] = torch.nn.functional.cross_entropy(model(x), y).item()
    t_loop = time.perf_counter() - t0
    n = directions * points
    return {"directions": directions, "points": points, "vectors": n, "n_params": int(w0.size), "width": width,
            "samples": int(data.n_train), "batch": batch, "device": device,
            "batched_vectors_per_s": n / t_batched, "loop_vectors_per_s": n / t_loop,
            "speedup": t_loop / t_batched, "max_abs_difference": float(np.max(np.abs(loop - batched)))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (seconds)")
    ap.add_argument("--replicas", type=int, default=None)
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--probe-widths", type=int, nargs="+", default=[256, 16],
                    help="hidden widths of the MLPs probed")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = ap.parse_args()
    replicas = args.replicas or (8 if args.quick else 64)
    info = {"python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "machine": platform.machine()}
    try:
        from threadpoolctl import threadpool_info

        info["blas"] = [(p.get("internal_api"), p.get("num_threads")) for p in threadpool_info()]
    except ImportError:
        pass
    align = bench_alignment(replicas, args.width, 64, pairs=8 if args.quick else 32)
    probes = [bench_probes(directions=4 if args.quick else 16, points=11 if args.quick else 21, width=w,
                           batch=64, device=args.device) for w in args.probe_widths]
    out = {"environment": info, "alignment": align, "probes": probes}
    if args.json:
        print(json.dumps(out, indent=2))
        return
    print(f"environment: {info}")
    a = align
    print(f"alignment: {a['replicas']} replicas of an MLP 64-{a['width']}-{a['width']}-10 (N = {a['n_params']}): "
          f"{a['reference_seconds']:.2f} s to align all to replica 0 ({a['seconds_per_matching'] * 1e3:.1f} ms per "
          f"matching, {a['mean_sweeps']:.1f} sweeps, converged: {a['all_converged']}); all "
          f"{a['replicas'] * (a['replicas'] - 1) // 2} pairs ≈ {a['pairwise_seconds_estimated']:.1f} s; distance "
          f"{a['mean_distance_raw']:.4f} -> {a['mean_distance_aligned']:.4f}")
    for p in probes:
        print(f"probes, MLP width {p['width']} (N = {p['n_params']}): {p['directions']} directions x {p['points']} "
              f"points on {p['samples']} samples ({p['device']}): batched {p['batched_vectors_per_s']:.1f} "
              f"vectors/s vs per-point loop {p['loop_vectors_per_s']:.1f} vectors/s -> {p['speedup']:.2f}x "
              f"(max |difference| {p['max_abs_difference']:.1e})")


if __name__ == "__main__":
    main()
