r"""The naive NumPy baseline of the ``command`` section: one phase-diagram cell as a whole process.

Usage::

    python benchmarks/naive_cell.py --d 4 --beta 1 --runs 20000 --dt 0.002 --steps 3000 --seed 0

``runs`` pairs of tokens start at overlap ``rho0`` (two orthonormal random unit vectors per pair for
``rho0 = 0``) and follow model A's limit SDE (``A = I``, ``Vbar = 0``, ``sigma = 1``, Itô) with Euler
steps in float64, batched over pairs, a Python loop over steps: per step and pair one ``d x d`` matrix
``dW`` of ``N(0, dt)`` normals, softmax barycentres ``a_i = sum_j w_ij x_j`` with
``w_i = softmax_j(beta <x_i, x_j>)``, and ``x <- N(x + P_x(dW a) - (d-1)/2 |a|^2 x dt)``. This is the loop
of ``bench_impls.NumpyNaive`` (problem P1), copied here so that the process imports NumPy only
(no torch, no tokensde). Prints one JSON line: the seconds of the integration and of the whole script,
the antipodal fraction (``rho < -0.99`` at the end) and its binomial standard error.
"""

from __future__ import annotations

import argparse
import json
import math
import time

T_START = time.perf_counter()

import numpy as np  # noqa: E402 (the clock starts before NumPy's import)

ANTIPODAL_RHO = -0.99
"""A pair counts as antipodal at the end when ``rho < ANTIPODAL_RHO`` (as ``bench_problems.ANTIPODAL_RHO``)."""


def initial_pairs(runs: int, d: int, rho0: float, rng: np.random.Generator) -> np.ndarray:
    """``(runs, 2, d)`` float64: ``x_1`` uniform on the sphere, ``x_2 = rho0 x_1 + sqrt(1 - rho0^2) u`` with
    ``u`` a uniform unit vector orthogonal to ``x_1``."""
    x1 = rng.standard_normal((runs, d))
    x1 /= np.linalg.norm(x1, axis=-1, keepdims=True)
    u = rng.standard_normal((runs, d))
    u -= (u * x1).sum(axis=-1, keepdims=True) * x1
    u /= np.linalg.norm(u, axis=-1, keepdims=True)
    x2 = rho0 * x1 + math.sqrt(1.0 - rho0 * rho0) * u
    return np.stack([x1, x2], axis=1)


def integrate(x: np.ndarray, beta: float, dt: float, steps: int, rng: np.random.Generator) -> np.ndarray:
    """``steps`` Euler steps of model A from ``x`` ``(B, n, d)``; the loop of ``bench_impls.NumpyNaive.run``."""
    d = x.shape[-1]
    sqdt, ito = math.sqrt(dt), 0.5 * (d - 1) * dt
    for _ in range(steps):
        s = beta * (x @ x.transpose(0, 2, 1))  # (B, n, n) scores
        s -= s.max(axis=-1, keepdims=True)
        w = np.exp(s)
        w /= w.sum(axis=-1, keepdims=True)
        a = w @ x  # barycentres (B, n, d)
        dw = rng.standard_normal((x.shape[0], d, d)) * sqdt
        m = a @ dw.transpose(0, 2, 1)  # m_i = dW a_i
        m -= (m * x).sum(axis=-1, keepdims=True) * x  # P_x
        y = x + m - ito * (a * a).sum(axis=-1, keepdims=True) * x
        x = y / np.linalg.norm(y, axis=-1, keepdims=True)
    return x


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--d", type=int, required=True, help="dimension")
    ap.add_argument("--beta", type=float, required=True, help="inverse temperature")
    ap.add_argument("--runs", type=int, required=True, help="pairs")
    ap.add_argument("--dt", type=float, required=True, help="time step")
    ap.add_argument("--steps", type=int, required=True, help="Euler steps")
    ap.add_argument("--seed", type=int, default=0, help="seed of NumPy's default_rng")
    ap.add_argument("--rho0", type=float, default=0.0, help="initial overlap of every pair")
    args = ap.parse_args(argv)
    if args.d < 2 or args.runs < 1 or args.steps < 0 or args.dt <= 0 or not -1.0 < args.rho0 < 1.0:
        ap.error("need d >= 2, runs >= 1, steps >= 0, dt > 0, -1 < rho0 < 1")

    rng = np.random.default_rng(args.seed)
    x = initial_pairs(args.runs, args.d, args.rho0, rng)
    t0 = time.perf_counter()
    x = integrate(x, args.beta, args.dt, args.steps, rng)
    loop = time.perf_counter() - t0
    rho = np.einsum("bd,bd->b", x[:, 0], x[:, 1])
    frac = float(np.mean(rho < ANTIPODAL_RHO))
    out = {
        "d": args.d,
        "beta": args.beta,
        "runs": args.runs,
        "dt": args.dt,
        "steps": args.steps,
        "rho0": args.rho0,
        "seed": args.seed,
        "loop_seconds": loop,
        "seconds": time.perf_counter() - T_START,
        "n_antipodal": int((rho < ANTIPODAL_RHO).sum()),
        "p_antipodal": frac,
        "se": math.sqrt(frac * (1.0 - frac) / args.runs),
        "numpy": np.__version__,
    }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
