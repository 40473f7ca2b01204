r"""The 3-D sphere viewer: token trajectories through depth, animated (plotly).

For ``d = 3`` the tokens are drawn as they are. For ``d > 3`` they are projected
on the 3-dimensional subspace that carries most of their squared norm over all
recorded depths (top three eigenvectors of the uncentred second-moment matrix
``sum_{k,i} x_i(t_k) x_i(t_k)^T``), and each projected point is renormalised onto
``S^2``. Overlaps in the view are those of the projections: exact when the
captured fraction (shown in the title) is 1, distorted otherwise. ``d = 2``
tokens are drawn on the equator.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["project_to_sphere", "sphere_viewer"]


def project_to_sphere(x: np.ndarray) -> tuple[np.ndarray, float]:
    """Map trajectories ``(K, n, d)`` to ``(K, n, 3)`` on ``S^2``; returns the points and the captured fraction."""
    k, n, d = x.shape
    if d == 3:
        return x.astype(float), 1.0
    if d == 2:
        return np.concatenate([x, np.zeros((k, n, 1))], axis=-1).astype(float), 1.0
    flat = x.reshape(-1, d).astype(float)
    m = flat.T @ flat
    evals, evecs = np.linalg.eigh(m)
    basis = evecs[:, ::-1][:, :3]
    captured = float(evals[::-1][:3].sum() / evals.sum())
    y = x.astype(float) @ basis
    norms = np.linalg.norm(y, axis=-1, keepdims=True)
    return y / np.maximum(norms, 1e-12), captured


def sphere_viewer(x: np.ndarray, times: np.ndarray, title: str, time_label: str = "t") -> dict[str, Any]:
    """A plotly figure (as a plain dict: plotly's object validation of every frame cost most of the report's
    time): a translucent unit sphere, the tokens at each recorded time as animation frames."""
    pts, captured = project_to_sphere(np.asarray(x))
    k, n, _ = pts.shape
    u, v = np.meshgrid(np.linspace(0, 2 * np.pi, 40), np.linspace(0, np.pi, 20))
    sphere = {
        "type": "surface",
        "x": np.cos(u) * np.sin(v),
        "y": np.sin(u) * np.sin(v),
        "z": np.cos(v),
        "opacity": 0.12,
        "showscale": False,
        "colorscale": [[0, "#9aa7b8"], [1, "#9aa7b8"]],
        "hoverinfo": "skip",
    }
    colors = np.arange(n)

    def tokens(j: int) -> dict[str, Any]:
        return {
            "type": "scatter3d",
            "x": pts[j, :, 0],
            "y": pts[j, :, 1],
            "z": pts[j, :, 2],
            "mode": "markers",
            "marker": {"size": 5, "color": colors, "colorscale": "Viridis"},
            "name": "tokens",
        }

    frames = [{"data": [sphere, tokens(j)], "name": f"{j}"} for j in range(k)]
    steps = [
        {
            "method": "animate",
            "label": f"{times[j]:.3g}",
            "args": [[f"{j}"], {"mode": "immediate", "frame": {"duration": 0, "redraw": True}}],
        }
        for j in range(k)
    ]
    proj = "" if x.shape[-1] <= 3 else f" (d = {x.shape[-1]} projected, {100 * captured:.0f}% of the norm captured)"
    layout = {
        "title": {"text": title + proj},
        "scene": {"aspectmode": "cube", **{ax: {"range": [-1.1, 1.1]} for ax in ("xaxis", "yaxis", "zaxis")}},
        "height": 560,
        "showlegend": False,
        "updatemenus": [
            {
                "type": "buttons",
                "showactive": False,
                "x": 0.02,
                "y": 0.02,
                "xanchor": "left",
                "yanchor": "bottom",
                "buttons": [
                    {
                        "label": "play",
                        "method": "animate",
                        "args": [None, {"frame": {"duration": 120, "redraw": True}, "fromcurrent": True}],
                    },
                    {
                        "label": "pause",
                        "method": "animate",
                        "args": [[None], {"mode": "immediate", "frame": {"duration": 0, "redraw": False}}],
                    },
                ],
            }
        ],
        "sliders": [{"active": 0, "currentvalue": {"prefix": f"{time_label} = "}, "pad": {"t": 40}, "steps": steps}],
    }
    return {"data": [sphere, tokens(0)], "layout": layout, "frames": frames}
