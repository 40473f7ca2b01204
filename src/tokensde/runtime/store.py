"""The run directory: manifest, per-unit results (atomic), table, verdict, figures.

Layout::

    DIR/manifest.json      config, seed, versions, git revision, device, times
    DIR/units/<id>.json    one file per finished unit, written atomically
    DIR/results.parquet    the tidy table
    DIR/verdict.json       {"verdict": "PASS"|"FAIL", "checks": [...]}
    DIR/*.png, *.svg, *.pdf  static figures (one style, :mod:`tokensde.report.style`)
    DIR/trajectories.npz   a few recorded token trajectories (for the sphere viewer)
    DIR/report.html        the self-contained offline report

Re-running with the same ``--out`` and the same config resumes: finished units
are read back, a truncated or corrupt unit file is recomputed.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..report.style import FORMATS

__all__ = ["RunStore", "atomic_write", "environment"]


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _git_revision() -> str | None:
    try:
        here = Path(__file__).resolve().parent
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def environment(device: str) -> dict[str, Any]:
    """Versions and machine facts for the manifest."""
    import matplotlib
    import numpy
    import scipy
    import torch

    from .. import __version__

    return {
        "tokensde": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "scipy": scipy.__version__,
        "pandas": pd.__version__,
        "matplotlib": matplotlib.__version__,
        "git_revision": _git_revision(),
        "device": device,
        "device_name": torch.cuda.get_device_name()
        if device.startswith("cuda")
        else platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "platform": platform.platform(),
    }


class RunStore:
    """A run directory for one experiment and one config."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.units = self.root / "units"

    def start(self, experiment: str, config: dict[str, Any], device: str) -> dict[str, Any]:
        """Create or reopen the directory; refuses a directory made with another config."""
        manifest_path = self.root / "manifest.json"
        if manifest_path.exists():
            old = json.loads(manifest_path.read_text())
            if old.get("experiment") != experiment or old.get("config") != config:
                raise ValueError(
                    f"out: {self.root} holds a run of {old.get('experiment')} with another config; choose another --out"
                )
            manifest = old
            manifest["resumed_at"] = manifest.get("resumed_at", []) + [datetime.now(UTC).isoformat()]
        else:
            manifest = {
                "experiment": experiment,
                "config": config,
                "seed": config.get("seed"),
                "started_at": datetime.now(UTC).isoformat(),
            }
        manifest["environment"] = environment(device)
        self.write_json("manifest.json", manifest)
        return manifest

    def unit_path(self, unit_id: str) -> Path:
        return self.units / f"{unit_id}.json"

    def load_unit(self, unit_id: str) -> list[dict[str, Any]] | None:
        """Rows of a finished unit, or ``None`` if absent, truncated or corrupt."""
        path = self.unit_path(unit_id)
        try:
            payload = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(payload, dict) or payload.get("id") != unit_id or not isinstance(payload.get("rows"), list):
            return None
        return payload["rows"]

    def save_unit(self, unit_id: str, rows: list[dict[str, Any]]) -> None:
        atomic_write(self.unit_path(unit_id), json.dumps({"id": unit_id, "rows": rows}).encode())

    def write_json(self, name: str, obj: Any) -> None:
        atomic_write(self.root / name, json.dumps(obj, indent=2, default=str).encode())

    def write_table(self, table: pd.DataFrame) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.root, suffix=".parquet.tmp")
        os.close(fd)
        table.to_parquet(tmp, index=False)
        os.replace(tmp, self.root / "results.parquet")

    def write_figures(self, figures: dict[str, Any]) -> list[str]:
        import matplotlib.pyplot as plt

        written = []
        for name, fig in figures.items():
            for ext in FORMATS:
                path = self.root / f"{name}.{ext}"
                fd, tmp = tempfile.mkstemp(dir=self.root, suffix=f".{ext}")
                os.close(fd)
                fig.savefig(tmp, dpi=150, format=ext)
                os.replace(tmp, path)
                written.append(str(path))
            plt.close(fig)
        return written

    def write_trajectory(self, traj: dict[str, Any]) -> None:
        """``trajectories.npz``: ``x`` ``(K, n, d)``, ``times`` ``(K,)``, ``title``, ``time_label`` (no pickle)."""
        fd, tmp = tempfile.mkstemp(dir=self.root, suffix=".npz")
        os.close(fd)
        with open(tmp, "wb") as f:
            np.savez_compressed(
                f,
                x=np.asarray(traj["x"], dtype=np.float32),
                times=np.asarray(traj["times"], dtype=float),
                title=np.asarray(traj["title"]),
                time_label=np.asarray(traj.get("time_label", "t")),
            )
        os.replace(tmp, self.root / "trajectories.npz")

    def finish(self, manifest: dict[str, Any], **extra: Any) -> None:
        manifest["finished_at"] = datetime.now(UTC).isoformat()
        manifest.update(extra)
        self.write_json("manifest.json", manifest)
