"""Sizes of the library's allocations, in bytes, computed from shapes alone (nothing is allocated).

One function per kind of allocation (the initial tokens, noise streams, model steps, attention
weights, the blocked metrics); each experiment's
:meth:`~tokensde.experiments.base.Experiment.unit_memory` is built from them, and
:mod:`tokensde.runtime.memory` compares the sum with the memory available. Pure: imports nothing
from the runtime, the report or the CLI.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

__all__ = [
    "MLP_KERNEL_BYTES",
    "attention_bytes",
    "itemsize",
    "metrics_bytes",
    "mlp_kernel_bytes",
    "mlp_step_bytes",
    "stream_bytes",
    "uniform_bytes",
    "value_noise_step_bytes",
]


def itemsize(dtype: Any) -> int:
    """Bytes per element of ``dtype``: ``"float32"``, ``"float64"`` or a torch dtype."""
    if isinstance(dtype, str):
        return {"float16": 2, "bfloat16": 2, "float32": 4, "float64": 8}[dtype]
    return int(dtype.itemsize)


def _slab() -> int:
    from .noise import SLAB

    return SLAB


def uniform_bytes(count: int, d: int, item: int, draw_item: int = 8) -> int:
    """Peak of :func:`tokensde.sphere.uniform` for ``count`` points drawn in ``draw_item`` bytes and cast to ``item``.

    The normals, the normalised copy (and the norms), then the cast (no copy if the same dtype).
    """
    return count * d * (2 * draw_item + (item if item != draw_item else 0)) + count * draw_item


def stream_bytes(systems: int, shape: Iterable[int], item: int, copies: int = 1, steps: int | None = None) -> int:
    """The engine's normals of ``systems`` for one slab of ``min(steps, SLAB)`` steps (default ``SLAB``):
    computed in float64 ``(slab, systems, *shape)`` and cast to ``item`` bytes, the per-system keys and
    indices (three int64), and ``copies`` draws of one step held beside them."""
    per = math.prod(int(s) for s in shape)
    slab = _slab() if steps is None else max(1, min(int(steps), _slab()))
    return systems * (slab * per * (8 + item) + copies * per * item) + 24 * systems


def attention_bytes(systems: int, n: int, d: int, item: int, device: str, heads: int = 1) -> int:
    """The ``n x n`` weights :func:`torch.nn.functional.scaled_dot_product_attention` materialises.

    None on the CPU (the fused kernel takes float32 and float64: measured, 64 systems
    of 1024 tokens grew the peak RSS by 4 MB against 256 MB of weights). On CUDA the
    fused kernels take float16/32 with a head width that is a multiple of 4
    (memory-efficient kernel, sm80+); otherwise the math route holds the scores and
    the softmax, ``2 * systems * heads * n^2`` numbers (a rule from PyTorch's
    ``sdp_utils``, not measured here).
    """
    if not device.startswith("cuda"):
        return 0
    if item <= 4 and d % 4 == 0:
        return 0
    return 2 * systems * heads * n * n * item


def value_noise_step_bytes(
    systems: int, n: int, d: int, item: int, device: str, kernel_route: bool, drift: bool = False, stack: bool = False
) -> int:
    """Temporaries of one step of model A (:class:`~tokensde.models.value_noise.ValueNoise`) on ``systems``.

    Euler–Maruyama: barycenters, the noise, its scaling, the increment (two), the
    update and its normalisation, each ``(B, n, d)``; the kernel route's QR of the
    barycenters (``n > 2``) adds about three; ``Vbar`` one more. The stack layer:
    about six. Plus the attention weights where they are materialised.
    """
    bnd = systems * n * d * item
    k = 7 if stack else 10
    if kernel_route and n > 2 and not stack:
        k += 3
    if drift:
        k += 1
    return k * bnd + 4 * systems * n * item + attention_bytes(systems, n, d, item, device)


MLP_KERNEL_BYTES = 192 * 2**20
"""Peak of building model C's kernel for a smooth activation (quadrature tables, in float64).

Measured: the first :meth:`MLPNoise.torch_kernel` raised the peak RSS by 133 MB (tanh,
``d = 4`` and ``8``; sigmoid, ``d = 64``) and 163 MB (gelu, ``d = 16``) with glibc's
``mmap`` threshold fixed (``MALLOC_MMAP_THRESHOLD_=65536``: freed memory is returned at
once), by 169 to 246 MB with the default allocator (which keeps some of it); ReLU
(closed form) by 2 MB.
"""


def mlp_kernel_bytes(activation: str) -> int:
    """:data:`MLP_KERNEL_BYTES` for a smooth activation, a few MB for ReLU (closed form)."""
    return 4 * 2**20 if activation == "relu" else MLP_KERNEL_BYTES


def mlp_step_bytes(systems: int, n: int, d: int, item: int, device: str, attention: bool) -> int:
    """Temporaries of one Euler step of model C's exact route (:class:`~tokensde.models.mlp_noise.MLPNoise`).

    ``n > 2``: the Gram matrix, the interpolated kernel (about 16 ``n x n`` arrays for
    the cubic Hermite table look-up), its Cholesky factor; ``n = 2``: the closed form.
    Then ``F xi`` and the update (about 7 ``(B, n, d)``), the attention (barycenters)
    when ``V != 0``.
    """
    bnd = systems * n * d * item
    kern = 18 * systems * n * n * item if n > 2 else 8 * bnd
    att = 2 * bnd + attention_bytes(systems, n, d, item, device) if attention else 0
    return kern + 7 * bnd + att


def metrics_bytes(systems: int, n: int, d: int, item: int) -> int:
    """Peak extra memory of :func:`tokensde.metrics.summary` on ``(systems, n, d)`` tokens of ``item`` bytes.

    The reused blocks of the Gram matrix (two of the dtype and two boolean, at most
    ``CHUNK_ENTRIES`` overlaps or one row block), the labels, and the effective
    rank's float64 copy and ``min(n, d)^2`` matrices.
    """
    from .metrics import CHUNK_ENTRIES

    rows = min(n, max(1, CHUNK_ENTRIES // n))
    group = min(systems, max(1, CHUNK_ENTRIES // (n * n))) if rows == n else 1
    block = group * rows * n
    r = min(n, d)
    copy = systems * n * d * 8 if item != 8 else 0
    return block * (2 * item + 2) + 16 * systems * n + copy + 24 * systems * r * r + 16 * systems * d
