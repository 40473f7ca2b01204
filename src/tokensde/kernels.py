r"""Compiled CPU kernels (numba): the counter-based normals and the fused two-token step.

Everything here is also written in plain torch elsewhere (:mod:`tokensde.rng`,
:func:`tokensde.models.value_noise.pair_euler_step`); the torch forms are the
reference and the route on CUDA. The kernels are compiled once per machine
(``cache=True``: a few seconds the first time, then loaded from numba's cache,
``NUMBA_CACHE_DIR`` or ``__pycache__`` beside this file) and parallelised over
systems in tiles of :data:`TILE` systems whose inner loops are vectorised.

Every system's arithmetic is the same whatever the tile it falls in, the number
of threads or the other systems in the call (no reduction crosses systems, no
fused multiply-add is contracted), so the numbers a system gets depend only on
its own inputs.

**The generator** (:func:`normals_into`; the definition is
:func:`tokensde.rng.normals`). Normal number ``c`` of step ``k`` of the system
with key ``(k_0, k_1)`` and index ``i`` is taken from the Philox4x32-10 block
(Salmon et al., SC'11) of counter ``(c // 4, k, i mod 2^32, i // 2^32)``; its
words ``(w_0, w_1)`` give normals ``4j, 4j+1`` and ``(w_2, w_3)`` give
``4j+2, 4j+3`` by Box–Muller:

.. math::

    u = (w_0 + 1)\,2^{-32} \in (0, 1], \quad r = \sqrt{-2 \ln u}, \quad
    \theta = \tfrac{\pi}{2}\big(q + f - \tfrac12\big),

    q = \lfloor w_1 / 2^{30} \rfloor, \quad f = \big((w_1 \bmod 2^{30}) + \tfrac12\big)\, 2^{-30},

    z = (r\cos\theta,\ r\sin\theta),

with ``ln`` and ``cos``/``sin`` evaluated by fixed polynomials (``ln m`` of the
mantissa ``m in [1/sqrt 2, sqrt 2)`` by the ``atanh`` series to ``s^17``, ``sin``
and ``cos`` on ``[-pi/4, pi/4)`` by Taylor to degree 17 and 18), in float64:
relative error below ``1e-15``, and the same bits from this kernel and from the
torch form on any device.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
from numba import njit

__all__ = ["TILE", "normals_into", "pair_levels"]

TILE = 64
"""Systems per tile: the vectorised inner loops run over a tile's systems."""

_M0 = np.uint64(0xD2511F53)
_M1 = np.uint64(0xCD9E8D57)
_W0 = np.uint64(0x9E3779B9)
_W1 = np.uint64(0xBB67AE85)
_MASK = np.uint64(0xFFFFFFFF)
_S32 = np.uint64(32)
_S30 = np.uint64(30)
_LOW30 = np.uint64(0x3FFFFFFF)
_ONE = np.uint64(1)
_TWO = np.uint64(2)

_jit = njit(cache=True, error_model="numpy", nogil=True)


_POOL: ThreadPoolExecutor | None = None
_POOL_SIZE = 0


def _run_tiles(fn: Callable[..., None], size: int, *args: Any) -> None:
    """``fn(*args, first, last)`` over the tiles of ``size`` systems, split into contiguous parts, one per thread.

    The kernels release the GIL; every system's arithmetic is independent of the split.
    """
    global _POOL, _POOL_SIZE
    tiles = (size + TILE - 1) // TILE
    parts = max(1, min(torch.get_num_threads(), tiles))
    if parts == 1:
        fn(*args, 0, tiles)
        return
    if _POOL is None or _POOL_SIZE < parts:
        if _POOL is not None:
            _POOL.shutdown(wait=False)
        _POOL = ThreadPoolExecutor(max_workers=parts, thread_name_prefix="tokensde-kernel")
        _POOL_SIZE = parts
    bounds = [tiles * k // parts for k in range(parts + 1)]
    futures = [_POOL.submit(fn, *args, bounds[k], bounds[k + 1]) for k in range(parts)]
    for f in futures:
        f.result()


def normals_into(out: np.ndarray, key0: np.ndarray, key1: np.ndarray, index: np.ndarray, step0: int) -> None:
    """``out[s, b, c]`` (float64 ``(S, B, m)``, C-contiguous): normal ``c`` of step ``step0 + s`` of system
    ``index[b]`` with key ``(key0[b], key1[b])`` (int64 arrays: 32-bit key words, indices)."""
    _run_tiles(_normals_tiles, out.shape[1], out, key0, key1, index, int(step0))


def pair_levels(
    states: np.ndarray,
    acc: np.ndarray,
    alive: np.ndarray,
    beta: np.ndarray,
    key0: np.ndarray,
    key1: np.ndarray,
    index: np.ndarray,
    ratios: np.ndarray,
    step0: int,
    steps: int,
    dt: float,
    sigma2: float,
    single: bool = False,
) -> None:
    """``steps`` fine steps from ``step0`` of coupled fused two-token Euler runs, normals drawn in place.

    ``states`` float64 ``(R, B, 2, d)``, updated in place: run ``l`` takes a step ``ratios[l] dt`` after
    every fine step ``k`` with ``(k + 1) % ratios[l] == 0``, with the normalised sum
    ``(xi_1 + ... + xi_r) / sqrt(r)`` of its fine normals, summed in ``acc`` float64 ``(R, B, 2d)`` (kept
    between calls, so a call may start and end anywhere); ``alive`` bool ``(R, B)``: whether run ``l``
    steps system ``b`` (the others keep their state). ``beta`` float64 ``(B,)``; the systems are
    ``index[b]`` with keys ``(key0[b], key1[b])`` (:func:`normals_into`). Each step is evaluated in float64;
    with ``single`` the new state is rounded to float32 after every step (a float32 state, as stored).
    """
    _run_tiles(
        _pair_levels_tiles, states.shape[1], states, acc, alive, beta, key0, key1, index, ratios,
        int(step0), int(steps), float(dt), float(sigma2), bool(single),
    )  # fmt: skip


@_jit
def _philox(c0, c1, c2, c3, k0, k1, n):  # type: ignore[no-untyped-def]
    """Philox4x32-10 in place on ``n`` lanes of counters ``c0..c3`` (uint64 arrays holding 32-bit words)."""
    for lane in range(n):
        a0, a1, a2, a3 = c0[lane], c1[lane], c2[lane], c3[lane]
        kk0, kk1 = k0[lane], k1[lane]
        for _ in range(10):
            p0 = a0 * _M0
            p1 = a2 * _M1
            a0, a1, a2, a3 = (p1 >> _S32) ^ a1 ^ kk0, p1 & _MASK, (p0 >> _S32) ^ a3 ^ kk1, p0 & _MASK
            kk0 = (kk0 + _W0) & _MASK
            kk1 = (kk1 + _W1) & _MASK
        c0[lane], c1[lane], c2[lane], c3[lane] = a0, a1, a2, a3


@_jit
def _box_muller(wr, wa, ub, z0, z1, n):  # type: ignore[no-untyped-def]
    """Two normals per lane from the words ``wr`` (radius) and ``wa`` (angle); ``ub`` is scratch."""
    ib = ub.view(np.int64)
    for lane in range(n):
        ub[lane] = (np.float64(wr[lane]) + 1.0) * 2.3283064365386963e-10
    for lane in range(n):
        bits = ib[lane]
        big = (bits & 0xFFFFFFFFFFFFF) > 0x6A09E667F3BCC  # mantissa >= sqrt(2): halve it
        e = np.float64((bits >> 52) - 1023 + big)
        ib[lane] = (bits & 0xFFFFFFFFFFFFF) | (0x3FE0000000000000 if big else 0x3FF0000000000000)
        m = ub[lane]
        s = (m - 1.0) / (m + 1.0)
        s2 = s * s
        p = (
            (((((((0.058823529411764705 * s2 + 0.06666666666666667) * s2 + 0.07692307692307693) * s2
            + 0.09090909090909091) * s2 + 0.1111111111111111) * s2 + 0.14285714285714285) * s2 + 0.2) * s2
            + 0.3333333333333333) * s2 + 1.0
        )  # fmt: skip
        lnu = e * 0.6931471805599453 + 2.0 * s * p
        r = math.sqrt(-2.0 * lnu)
        w = wa[lane]
        q = w >> _S30
        phi = ((np.float64(w & _LOW30) + 0.5) * 9.313225746154785e-10 - 0.5) * 1.5707963267948966
        f2 = phi * phi
        sp = (
            ((((((((2.8114572543455206e-15 * f2 + -7.647163731819816e-13) * f2 + 1.6059043836821613e-10) * f2
            + -2.505210838544172e-08) * f2 + 2.7557319223985893e-06) * f2 + -0.0001984126984126984) * f2
            + 0.008333333333333333) * f2 + -0.16666666666666666) * f2 + 1.0) * phi
        )  # fmt: skip
        cp = (
            ((((((((-1.5619206968586225e-16 * f2 + 4.779477332387385e-14) * f2 + -1.1470745597729725e-11) * f2
            + 2.08767569878681e-09) * f2 + -2.755731922398589e-07) * f2 + 2.48015873015873e-05) * f2
            + -0.001388888888888889) * f2 + 0.041666666666666664) * f2 + -0.5) * f2 + 1.0
        )  # fmt: skip
        odd = (q & _ONE) == _ONE
        a = sp if odd else cp
        b = cp if odd else sp
        ra = r * a
        rb = r * b
        z0[lane] = -ra if (q == _ONE or q == _TWO) else ra
        z1[lane] = -rb if q >= _TWO else rb


@_jit
def _scratch():  # type: ignore[no-untyped-def]
    """A tile's scratch for :func:`_draw`: the four counters, the two key words (uint64) and three float64 lanes."""
    u = np.empty((6, TILE), np.uint64)
    f = np.empty((3, TILE))
    return u[0], u[1], u[2], u[3], u[4], u[5], f[0], f[1], f[2]


@_jit
def _draw(xi, groups, step, lo, n, key0, key1, index, c0, c1, c2, c3, k0, k1, ub, z0, z1):  # type: ignore[no-untyped-def]
    """The ``4 groups`` normals of step ``step`` for lanes ``lo .. lo + n`` into ``xi`` ``(4 groups, TILE)``."""
    for j in range(groups):
        for lane in range(n):
            idx = np.uint64(index[lo + lane])
            c0[lane] = np.uint64(j)
            c1[lane] = np.uint64(step)
            c2[lane] = idx & _MASK
            c3[lane] = idx >> _S32
            k0[lane] = np.uint64(key0[lo + lane])
            k1[lane] = np.uint64(key1[lo + lane])
        _philox(c0, c1, c2, c3, k0, k1, n)
        _box_muller(c0, c1, ub, z0, z1, n)
        for lane in range(n):
            xi[4 * j, lane] = z0[lane]
            xi[4 * j + 1, lane] = z1[lane]
        _box_muller(c2, c3, ub, z0, z1, n)
        for lane in range(n):
            xi[4 * j + 2, lane] = z0[lane]
            xi[4 * j + 3, lane] = z1[lane]


@_jit
def _normals_tiles(out, key0, key1, index, step0, first, last):  # type: ignore[no-untyped-def]
    """``out[s, b, c]`` (float64 ``(S, B, m)``): normal ``c`` of step ``step0 + s`` of system ``index[b]``
    with key ``(key0[b], key1[b])`` (int64 arrays of 32-bit words and of indices)."""
    steps, size, m = out.shape
    groups = (m + 3) // 4
    for t in range(first, last):
        lo = t * TILE
        n = min(TILE, size - lo)
        c0, c1, c2, c3, k0, k1, ub, z0, z1 = _scratch()
        xi = np.empty((4 * groups, TILE))
        for s in range(steps):
            _draw(xi, groups, step0 + s, lo, n, key0, key1, index, c0, c1, c2, c3, k0, k1, ub, z0, z1)
            for lane in range(n):
                for c in range(m):
                    out[s, lo + lane, c] = xi[c, lane]


_POW2 = np.array([2.0**k for k in range(64)])


@_jit
def _tanh(y, out, n):  # type: ignore[no-untyped-def]
    """``out[l] = tanh(y[l])`` by polynomials, vectorised over the lanes (``out`` may be ``y``).

    ``|y| < 0.1``: the Taylor series to ``y^15`` (relative error below ``1e-17``, so ``tanh`` keeps its
    relative accuracy as ``y -> 0``); otherwise ``1 - 2 / (exp(2|y|) + 1)`` with ``exp`` by Cody–Waite
    reduction ``2|y| = k ln 2 + r`` and Taylor in ``r`` to degree 13 (``2|y|`` capped at 40, where
    ``tanh = 1`` in float64). Relative error below ``2e-15`` (tested against libm).
    """
    for lane in range(n):
        v = y[lane]
        a = abs(v)
        z = min(2.0 * a, 40.0)
        k = np.floor(z * 1.4426950408889634 + 0.5)
        r = (z - k * 0.6931467056274414) - k * 4.7493250390316726e-07
        p = (
            ((((((((((((1.6059043836821613e-10 * r + 2.08767569878681e-09) * r + 2.505210838544172e-08) * r
            + 2.755731922398589e-07) * r + 2.7557319223985893e-06) * r + 2.48015873015873e-05) * r
            + 0.0001984126984126984) * r + 0.001388888888888889) * r + 0.008333333333333333) * r
            + 0.041666666666666664) * r + 0.16666666666666666) * r + 0.5) * r + 1.0) * r + 1.0
        )  # fmt: skip
        e = p * _POW2[int(k)]
        big = 1.0 - 2.0 / (e + 1.0)
        s2 = a * a
        small = a * (
            ((((((-0.0014558343870513183 * s2 + 0.003592128036572481) * s2 + -0.008863235529902197) * s2
            + 0.021869488536155203) * s2 + -0.05396825396825397) * s2 + 0.13333333333333333) * s2
            + -0.3333333333333333) * s2 + 1.0
        )  # fmt: skip
        t = small if a < 0.1 else big
        out[lane] = -t if v < 0.0 else t


@_jit
def _pair_step(x, z, beta, lo, n, h, sigma2, d, w, single):  # type: ignore[no-untyped-def]
    """One fused two-token Euler step (the closed forms of ``pair_euler_step``) on the lanes of one tile.

    ``x`` ``(2, d, TILE)`` tokens, ``z`` ``(>= 2d, TILE)`` the step's normals (token 1's ``d`` then token
    2's), ``w`` ``(8, TILE)`` scratch. Every loop over coordinates runs over the lanes inside (vectorised).
    """
    sp, sm, a11, a21, a22, shrink, d1, d2 = w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]
    for lane in range(n):
        sp[lane] = 0.0
        sm[lane] = 0.0
    for c in range(d):
        for lane in range(n):
            a = x[0, c, lane]
            b = x[1, c, lane]
            sp[lane] += (a + b) * (a + b)
            sm[lane] += (a - b) * (a - b)
    for lane in range(n):
        a22[lane] = 0.25 * beta[lo + lane] * sm[lane]
    _tanh(a22, a22, n)  # t = p - q = tanh(beta (1 - rho) / 2)
    sq = math.sqrt(h * sigma2)
    rate = 0.5 * (d - 1) * h * sigma2
    for lane in range(n):
        s_plus = 0.5 * sp[lane]
        s_minus = 0.5 * sm[lane]
        t = a22[lane]
        t2 = t * t
        c0 = t2 + (0.5 * (1.0 - t2)) * s_plus  # (p-q)^2 + 2pq (1 + rho)
        c1 = (0.5 * (1.0 + t2)) * s_plus - t2  # (p^2+q^2)(1 + rho) - (p-q)^2
        l11 = max(math.sqrt(c0), 2.2250738585072014e-308)
        a11[lane] = sq * l11
        a21[lane] = sq * (c1 / l11)
        a22[lane] = sq * (abs(t) * math.sqrt(s_plus * s_minus) / l11)
        shrink[lane] = 1.0 - rate * c0
        d1[lane] = 0.0
        d2[lane] = 0.0
    for c in range(d):
        for lane in range(n):
            d1[lane] += a11[lane] * z[c, lane] * x[0, c, lane]
            d2[lane] += (a21[lane] * z[c, lane] + a22[lane] * z[d + c, lane]) * x[1, c, lane]
    for lane in range(n):
        sp[lane] = 0.0
        sm[lane] = 0.0
    for c in range(d):
        for lane in range(n):
            x1 = x[0, c, lane]
            x2 = x[1, c, lane]
            y1 = shrink[lane] * x1 + (a11[lane] * z[c, lane] - d1[lane] * x1)
            y2 = shrink[lane] * x2 + ((a21[lane] * z[c, lane] + a22[lane] * z[d + c, lane]) - d2[lane] * x2)
            x[0, c, lane] = y1
            x[1, c, lane] = y2
            sp[lane] += y1 * y1
            sm[lane] += y2 * y2
    for lane in range(n):
        sp[lane] = math.sqrt(sp[lane])
        sm[lane] = math.sqrt(sm[lane])
    if single:  # the state is kept in float32: rounded after every step
        for c in range(d):
            for lane in range(n):
                x[0, c, lane] = np.float64(np.float32(x[0, c, lane] / sp[lane]))
                x[1, c, lane] = np.float64(np.float32(x[1, c, lane] / sm[lane]))
    else:
        for c in range(d):
            for lane in range(n):
                x[0, c, lane] = x[0, c, lane] / sp[lane]
                x[1, c, lane] = x[1, c, lane] / sm[lane]


@_jit
def _pair_levels_tiles(
    states, acc, alive, beta, key0, key1, index, ratios, step0, steps, dt, sigma2, single, first, last
):  # type: ignore[no-untyped-def]
    """``steps`` fine steps from ``step0`` of coupled fused two-token Euler runs, normals drawn in place.

    ``states`` float64 ``(R, B, 2, d)``, updated in place: run ``l`` takes a step ``ratios[l] dt`` every
    ``ratios[l]`` fine steps with the normalised sum of those fine normals (``step0`` and ``steps`` are
    multiples of every ratio); ``alive`` bool ``(R, B)``: whether run ``l`` steps system ``b`` (the others
    keep their state). The systems are ``index[b]`` with keys ``(key0[b], key1[b])`` (:func:`normals_into`).
    """
    runs, size, _, d = states.shape
    groups = (2 * d + 3) // 4
    for t in range(first, last):
        lo = t * TILE
        n = min(TILE, size - lo)
        c0, c1, c2, c3, k0, k1, ub, z0, z1 = _scratch()
        w = np.empty((8, TILE))
        xi = np.empty((4 * groups, TILE))
        x = np.empty((runs, 2, d, TILE))
        sums = np.empty((runs, 2 * d, TILE))
        for r in range(runs):
            for lane in range(n):
                for tok in range(2):
                    for c in range(d):
                        x[r, tok, c, lane] = states[r, lo + lane, tok, c]
                for c in range(2 * d):
                    sums[r, c, lane] = acc[r, lo + lane, c]
        for s in range(steps):
            _draw(xi, groups, step0 + s, lo, n, key0, key1, index, c0, c1, c2, c3, k0, k1, ub, z0, z1)
            for r in range(runs):
                ratio = ratios[r]
                if ratio == 1:
                    _pair_step(x[r], xi, beta, lo, n, dt, sigma2, d, w, single)
                    continue
                a = sums[r]
                for c in range(2 * d):
                    for lane in range(n):
                        a[c, lane] += xi[c, lane]
                if (step0 + s + 1) % ratio:
                    continue
                scale = 1.0 / math.sqrt(ratio)
                for c in range(2 * d):
                    for lane in range(n):
                        a[c, lane] *= scale
                _pair_step(x[r], a, beta, lo, n, ratio * dt, sigma2, d, w, single)
                for c in range(2 * d):
                    for lane in range(n):
                        a[c, lane] = 0.0
        for r in range(runs):
            for lane in range(n):
                for c in range(2 * d):
                    acc[r, lo + lane, c] = sums[r, c, lane]
                if alive[r, lo + lane]:
                    for tok in range(2):
                        for c in range(d):
                            states[r, lo + lane, tok, c] = x[r, tok, c, lane]


def warm() -> float:
    """Compile every kernel (or load it from numba's cache) on a tiny input; returns the seconds it took."""
    import time

    t0 = time.perf_counter()
    size = 2
    key, idx = np.zeros(size, np.int64), np.arange(size, dtype=np.int64)
    normals_into(np.empty((1, size, 4)), key, key, idx, 0)
    states = np.zeros((1, size, 2, 2))
    states[..., 0] = 1.0
    pair_levels(
        states, np.zeros((1, size, 4)), np.ones((1, size), bool), np.ones(size), key, key, idx,
        np.ones(1, np.int64), 0, 1, 0.01, 1.0,
    )  # fmt: skip
    return time.perf_counter() - t0


if __name__ == "__main__":  # `python -m tokensde.kernels`: compile once (scripts/setup.sh does it)
    print(f"tokensde kernels ready in {warm():.1f} s")
