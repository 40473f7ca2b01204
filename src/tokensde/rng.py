r"""Counter-based standard normals: a normal is a function of (key, system, step, coordinate).

The normals that drive a system are not drawn from a serial generator: normal
``c`` of fine step ``k`` of the system with index ``i`` in a stream with key
``kappa`` is computed from those four numbers alone,

.. math::

    (w_0, w_1, w_2, w_3) = \mathrm{Philox4x32\text{-}10}_{\kappa}
        \big(\lfloor c/4 \rfloor,\ k,\ i \bmod 2^{32},\ \lfloor i / 2^{32} \rfloor\big),

    \xi_{4j}, \xi_{4j+1} = \mathrm{BM}(w_0, w_1), \qquad \xi_{4j+2}, \xi_{4j+3} = \mathrm{BM}(w_2, w_3),

with the Box–Muller map ``BM`` of :mod:`tokensde.kernels` (radius from the first
word, angle from the second; ``ln``, ``sin`` and ``cos`` by fixed polynomials, in
float64). ``kappa`` is the 64-bit :func:`~tokensde.noise.derive_seed` of the
base seed and the stream's key, split into two 32-bit words.

So the numbers a system gets do not depend on how the systems are chunked, on
the threads, on the executor, on the device, nor on which other systems are
simulated or retired; any step's normals can be computed without the previous
ones. On the CPU the compiled kernel (:func:`tokensde.kernels.normals_into`)
computes them; :func:`normals_torch` is the same arithmetic in torch (the route
on CUDA, and the reference the kernel is tested against: the same bits).

Examples
--------
>>> import torch
>>> from tokensde.rng import normals, normals_torch, stream_keys
>>> k0, k1 = stream_keys(0, "demo")
>>> idx = torch.arange(5)
>>> z = normals(k0, k1, idx, step0=3, steps=2, count=6)
>>> tuple(z.shape), z.dtype
((2, 5, 6), torch.float64)
>>> bool(torch.equal(z, normals_torch(k0, k1, idx, 3, 2, 6)))   # the kernel and the torch form agree bitwise
True
>>> bool(torch.equal(normals(k0, k1, idx[2:4], 4, 1, 6)[0], z[1, 2:4]))  # a function of (key, system, step)
True
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from .noise import derive_seed

__all__ = ["stream_keys", "philox4x32", "box_muller", "normals", "normals_torch"]

_MASK = 0xFFFFFFFF
_M0, _M1 = 0xD2511F53, 0xCD9E8D57
_W0, _W1 = 0x9E3779B9, 0xBB67AE85
_LOG = (
    0.058823529411764705, 0.06666666666666667, 0.07692307692307693, 0.09090909090909091,
    0.1111111111111111, 0.14285714285714285, 0.2, 0.3333333333333333, 1.0,
)  # fmt: skip
_SIN = (
    2.8114572543455206e-15, -7.647163731819816e-13, 1.6059043836821613e-10, -2.505210838544172e-08,
    2.7557319223985893e-06, -0.0001984126984126984, 0.008333333333333333, -0.16666666666666666, 1.0,
)  # fmt: skip
_COS = (
    -1.5619206968586225e-16, 4.779477332387385e-14, -1.1470745597729725e-11, 2.08767569878681e-09,
    -2.755731922398589e-07, 2.48015873015873e-05, -0.001388888888888889, 0.041666666666666664, -0.5, 1.0,
)  # fmt: skip


def stream_keys(seed: int, *key: object) -> tuple[int, int]:
    """The Philox key ``(k_0, k_1)`` (two 32-bit words) of the stream ``key`` under ``seed``.

    Examples
    --------
    >>> from tokensde.rng import stream_keys
    >>> from tokensde.noise import derive_seed
    >>> k0, k1 = stream_keys(0, "cell", 1)
    >>> k0 + (k1 << 32) == derive_seed(0, "cell", 1)
    True
    """
    s = derive_seed(seed, *key)
    return s & _MASK, s >> 32


def philox4x32(
    c: tuple[Tensor, Tensor, Tensor, Tensor], k0: Tensor | int, k1: Tensor | int
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Philox4x32-10 of the counters ``c`` (int64 tensors holding 32-bit words) under the key ``(k0, k1)``.

    Examples
    --------
    The known-answer vectors of Random123 (Salmon et al., SC'11):

    >>> import torch
    >>> from tokensde.rng import philox4x32
    >>> z = torch.zeros(1, dtype=torch.int64)
    >>> [hex(int(w)) for w in philox4x32((z, z, z, z), 0, 0)]
    ['0x6627e8d5', '0xe169c58d', '0xbc57ac4c', '0x9b00dbd8']
    >>> ones = torch.full((1,), 0xFFFFFFFF, dtype=torch.int64)
    >>> [hex(int(w)) for w in philox4x32((ones, ones, ones, ones), 0xFFFFFFFF, 0xFFFFFFFF)]
    ['0x408f276d', '0x41c83b0e', '0xa20bc7c6', '0x6d5451fd']
    """
    a0, a1, a2, a3 = c
    kk0 = k0 if isinstance(k0, Tensor) else torch.tensor(int(k0), dtype=torch.int64, device=a0.device)
    kk1 = k1 if isinstance(k1, Tensor) else torch.tensor(int(k1), dtype=torch.int64, device=a0.device)
    for _ in range(10):
        p0 = a0 * _M0  # < 2^64: wraps in int64, and the masks below read the unsigned words back
        p1 = a2 * _M1
        a0, a1, a2, a3 = ((p1 >> 32) & _MASK) ^ a1 ^ kk0, p1 & _MASK, ((p0 >> 32) & _MASK) ^ a3 ^ kk1, p0 & _MASK
        kk0 = (kk0 + _W0) & _MASK
        kk1 = (kk1 + _W1) & _MASK
    return a0, a1, a2, a3


def _horner(coefs: tuple[float, ...], x: Tensor) -> Tensor:
    p = coefs[0] * x + coefs[1]
    for c in coefs[2:]:
        p = p * x + c
    return p


def _sqrt(x: Tensor) -> Tensor:
    """The correctly rounded square root: torch's vectorised CPU ``sqrt`` is not (it is off by one unit in the
    last place for about one number in a hundred), so on the CPU it is taken from NumPy; CUDA's is."""
    if x.device.type == "cpu":
        return torch.from_numpy(np.sqrt(x.numpy()))
    return torch.sqrt(x)


def box_muller(wr: Tensor, wa: Tensor) -> tuple[Tensor, Tensor]:
    r"""Two standard normals (float64) from the 32-bit words ``wr`` (radius) and ``wa`` (angle).

    ``u = (wr + 1) 2^-32`` in ``(0, 1]``, ``r = sqrt(-2 ln u)``; ``q = wa // 2^30``,
    ``f = ((wa mod 2^30) + 1/2) 2^-30``, ``theta = (pi/2)(q + f - 1/2)``; returns
    ``(r cos theta, r sin theta)``. ``ln`` is taken from the exponent and the
    mantissa ``m in [1/sqrt 2, sqrt 2)`` (``ln m = 2 atanh((m-1)/(m+1))``, series to
    degree 17); ``sin``, ``cos`` of ``theta - (pi/2) q`` in ``[-pi/4, pi/4)`` by Taylor
    polynomials (degrees 17, 18), then rotated by ``q`` quarter turns: exact
    operations only, so the kernel's bits are reproduced on every device.

    Examples
    --------
    >>> import math
    >>> import torch
    >>> from tokensde.rng import box_muller
    >>> w = torch.tensor([0, 2**31, 2**32 - 1], dtype=torch.int64)
    >>> z0, z1 = box_muller(w, torch.tensor([0, 3 << 30, 2**30 + 5], dtype=torch.int64))
    >>> r = torch.sqrt(-2 * torch.log((w.double() + 1.0) * 2.0**-32))
    >>> bool(torch.allclose(torch.hypot(z0, z1), r, rtol=1e-15, atol=1e-15))
    True
    """
    u = (wr.to(torch.float64) + 1.0) * 2.3283064365386963e-10
    bits = u.view(torch.int64)
    mant = bits & 0xFFFFFFFFFFFFF
    big = mant > 0x6A09E667F3BCC
    e = ((bits >> 52) - 1023 + big.to(torch.int64)).to(torch.float64)
    m = (mant | torch.where(big, 0x3FE0000000000000, 0x3FF0000000000000)).view(torch.float64)
    s = (m - 1.0) / (m + 1.0)
    s2 = s * s
    lnu = e * 0.6931471805599453 + (2.0 * s) * _horner(_LOG, s2)
    r = _sqrt(-2.0 * lnu)
    q = wa >> 30
    phi = (((wa & 0x3FFFFFFF).to(torch.float64) + 0.5) * 9.313225746154785e-10 - 0.5) * 1.5707963267948966
    f2 = phi * phi
    sp = _horner(_SIN, f2) * phi
    cp = _horner(_COS, f2)
    odd = (q & 1) == 1
    ra = r * torch.where(odd, sp, cp)
    rb = r * torch.where(odd, cp, sp)
    return torch.where((q == 1) | (q == 2), -ra, ra), torch.where(q >= 2, -rb, rb)


def _key_tensor(k: Tensor | int | np.ndarray, size: int, device: torch.device) -> Tensor:
    t = torch.as_tensor(k, dtype=torch.int64, device=device)
    return t.expand(size) if t.dim() == 0 else t


def normals_torch(
    key0: Tensor | int,
    key1: Tensor | int,
    index: Tensor,
    step0: int,
    steps: int,
    count: int,
    device: torch.device | str | None = None,
) -> Tensor:
    """The normals of :func:`normals`, computed with torch operations (any device), float64 ``(steps, B, count)``."""
    dev = torch.device(device) if device is not None else index.device
    idx = index.to(device=dev, dtype=torch.int64)
    size = idx.shape[0]
    groups = (count + 3) // 4
    k0 = _key_tensor(key0, size, dev).view(1, size, 1)
    k1 = _key_tensor(key1, size, dev).view(1, size, 1)
    shape = (steps, size, groups)
    c0 = torch.arange(groups, dtype=torch.int64, device=dev).view(1, 1, groups).expand(shape)
    c1 = torch.arange(step0, step0 + steps, dtype=torch.int64, device=dev).view(steps, 1, 1).expand(shape)
    c2 = (idx & _MASK).view(1, size, 1).expand(shape)
    c3 = (idx >> 32).view(1, size, 1).expand(shape)
    w0, w1, w2, w3 = philox4x32((c0, c1, c2, c3), k0, k1)
    z0, z1 = box_muller(w0, w1)
    z2, z3 = box_muller(w2, w3)
    return torch.stack([z0, z1, z2, z3], -1).reshape(steps, size, 4 * groups)[..., :count]


def normals(
    key0: Tensor | int,
    key1: Tensor | int,
    index: Tensor,
    step0: int,
    steps: int,
    count: int,
    device: torch.device | str | None = None,
) -> Tensor:
    r"""Standard normals ``(steps, B, count)`` (float64): ``[s, b, c]`` is normal ``c`` of step ``step0 + s``
    of system ``index[b]`` in the stream with key ``(key0, key1)`` (scalars, or one per system).

    On the CPU the compiled kernel computes them (parallel over systems with torch's thread
    count); elsewhere :func:`normals_torch`. Both give the same bits.

    Parameters
    ----------
    key0, key1 : int or Tensor ``(B,)``
        The stream key's 32-bit words (:func:`stream_keys`).
    index : Tensor ``(B,)``
        System indices (``< 2^63``).
    step0, steps : int
        First step and number of steps (``step0 + steps <= 2^32``).
    count : int
        Normals per system and step.
    device : optional
        Where the result lives (default: ``index``'s device).
    """
    dev = torch.device(device) if device is not None else index.device
    if step0 < 0 or step0 + steps > 2**32:
        raise ValueError(f"steps must lie in [0, 2^32), got {step0}..{step0 + steps}")
    if dev.type != "cpu":
        return normals_torch(key0, key1, index, step0, steps, count, dev)
    from . import kernels

    idx = index.to(device="cpu", dtype=torch.int64).contiguous().numpy()
    size = idx.shape[0]
    k0 = _key_tensor(key0, size, torch.device("cpu")).contiguous().numpy()
    k1 = _key_tensor(key1, size, torch.device("cpu")).contiguous().numpy()
    out = np.empty((steps, size, count))
    if size and steps and count:
        kernels.normals_into(out, k0, k1, idx, int(step0))
    return torch.from_numpy(out)
