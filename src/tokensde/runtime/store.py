"""The run directory: manifest, per-unit results (atomic), table, verdict, figures.

Layout::

    DIR/manifest.json      config, seed, versions, git revision, device, times
    DIR/units/<id>.json    one file per finished unit, written atomically:
                           {"id": ..., "sha256": <of the canonical JSON of rows>, "rows": [...]}
    DIR/checkpoints/<id>.npz  the state of a long unit still running (experiments that
                           checkpoint, e.g. training); removed once the unit is finished
    DIR/results.parquet    the tidy table
    DIR/<name>.parquet     further tables of some experiments (``Experiment.tables``)
    DIR/verdict.json       {"verdict": "PASS"|"FAIL", "checks": [...]}
    DIR/*.png, *.svg, *.pdf  static figures (one style, :mod:`tokensde.report.style`)
    DIR/trajectories.npz   a few recorded token trajectories (for the sphere viewer)
    DIR/report.html        the self-contained offline report

Re-running with the same ``--out`` and the same config resumes: finished units
are read back, a truncated, corrupt or edited unit file (its rows no longer
match its ``sha256``) is recomputed. Rows always pass through their canonical
JSON (:func:`canonical_rows`), fresh or resumed, so a resumed run's table is
bitwise the table of an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import io
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

__all__ = ["FileCheckpoint", "RunStore", "atomic_write", "canonical_rows", "environment", "normalize_rows"]


def canonical_rows(rows: list[dict[str, Any]]) -> bytes:
    """The canonical JSON of a unit's rows (key order kept, no spaces, NaN/Infinity allowed).

    Floats are written with ``repr`` (shortest round-trip), so
    ``canonical_rows(json.loads(canonical_rows(rows))) == canonical_rows(rows)``.
    """
    return json.dumps(rows, separators=(",", ":"), allow_nan=True).encode()


def normalize_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``rows`` as they read back from the store (tuples -> lists, NumPy floats -> float, ...)."""
    out: list[dict[str, Any]] = json.loads(canonical_rows(rows))
    return out


def rows_digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


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


class FileCheckpoint:
    """A unit's checkpoint: one ``.npz`` of named arrays, written atomically, read without pickle.

    Picklable (a path), so it travels to process-pool and Ray workers; on a multi-machine
    Ray cluster the run directory must be on a file system the workers share, or a
    unit interrupted there starts again from its beginning.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def load(self) -> dict[str, np.ndarray] | None:
        """The saved arrays, or ``None`` if there is no checkpoint or it cannot be read back whole."""
        if not self.path.exists():
            return None
        try:
            with np.load(self.path, allow_pickle=False) as f:
                return {k: f[k] for k in f.files}
        except Exception:  # noqa: BLE001 - truncated or corrupt: start the unit again
            return None

    def save(self, arrays: dict[str, np.ndarray]) -> None:
        buf = io.BytesIO()
        np.savez(buf, **{k: np.asarray(v) for k, v in arrays.items()})  # type: ignore[arg-type]
        atomic_write(self.path, buf.getvalue())

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


class RunStore:
    """A run directory for one experiment and one config."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.units = self.root / "units"

    def start(
        self, experiment: str, config: dict[str, Any], device: str, execution: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Create or reopen the directory; refuses a directory made with another config.

        ``execution`` (executor, workers, threads per unit, Ray address) is recorded as
        ``manifest["execution"]`` and appended to ``manifest["executions"]`` (one entry per
        start or resume); it never makes a resume refused.
        """
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
        if execution is not None:
            manifest["execution"] = execution
            manifest["executions"] = manifest.get("executions", []) + [
                {**execution, "at": datetime.now(UTC).isoformat()}
            ]
        self.write_json("manifest.json", manifest)
        return manifest

    def unit_path(self, unit_id: str) -> Path:
        return self.units / f"{unit_id}.json"

    def checkpoint_dir(self) -> Path:
        return self.root / "checkpoints"

    def checkpoint(self, unit_id: str) -> FileCheckpoint:
        return FileCheckpoint(self.checkpoint_dir() / f"{unit_id}.npz")

    def check_unit(self, unit_id: str) -> tuple[list[dict[str, Any]] | None, str | None]:
        """``(rows, None)`` for a finished unit, ``(None, None)`` if absent, ``(None, why)`` if unusable.

        Unusable: unreadable, truncated or not JSON, another unit's file, no checksum, or
        rows whose canonical JSON does not hash to the stored ``sha256`` (edited or corrupt).
        """
        path = self.unit_path(unit_id)
        if not path.exists():
            return None, None
        try:
            payload = json.loads(path.read_bytes())
        except OSError as e:
            return None, f"cannot be read ({e.strerror})"
        except ValueError:
            return None, "is truncated or not valid JSON"
        if not isinstance(payload, dict) or payload.get("id") != unit_id or not isinstance(payload.get("rows"), list):
            return None, "does not hold this unit's rows"
        if not isinstance(payload.get("sha256"), str):
            return None, "has no checksum"
        if rows_digest(canonical_rows(payload["rows"])) != payload["sha256"]:
            return None, "does not match its checksum"
        rows: list[dict[str, Any]] = payload["rows"]
        return rows, None

    def load_unit(self, unit_id: str) -> list[dict[str, Any]] | None:
        """Rows of a finished unit, or ``None`` if absent, truncated, corrupt or edited."""
        return self.check_unit(unit_id)[0]

    def save_unit(self, unit_id: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Write the unit atomically with the checksum of its rows; returns the rows as they read back."""
        data = canonical_rows(rows)
        head = json.dumps({"id": unit_id, "sha256": rows_digest(data)})[:-1]
        atomic_write(self.unit_path(unit_id), head.encode() + b', "rows": ' + data + b"}")
        self.checkpoint(unit_id).remove()
        return normalize_rows(rows)

    def write_json(self, name: str, obj: Any) -> None:
        atomic_write(self.root / name, json.dumps(obj, indent=2, default=str).encode())

    def write_table(self, table: pd.DataFrame, name: str = "results") -> None:
        buf = io.BytesIO()
        table.to_parquet(buf, index=False)
        atomic_write(self.root / f"{name}.parquet", buf.getvalue())

    def write_figures(self, figures: dict[str, Any]) -> list[str]:
        import matplotlib.pyplot as plt

        written = []
        for name, fig in figures.items():
            for ext in FORMATS:
                path = self.root / f"{name}.{ext}"
                buf = io.BytesIO()
                fig.savefig(buf, dpi=150, format=ext)
                atomic_write(path, buf.getvalue())
                written.append(str(path))
            plt.close(fig)
        return written

    def write_trajectory(self, traj: dict[str, Any]) -> None:
        """``trajectories.npz``: ``x`` ``(K, n, d)``, ``times`` ``(K,)``, ``title``, ``time_label`` (no pickle)."""
        buf = io.BytesIO()
        np.savez_compressed(
            buf,
            x=np.asarray(traj["x"], dtype=np.float32),
            times=np.asarray(traj["times"], dtype=float),
            title=np.asarray(traj["title"]),
            time_label=np.asarray(traj.get("time_label", "t")),
        )
        atomic_write(self.root / "trajectories.npz", buf.getvalue())

    def finish(self, manifest: dict[str, Any], **extra: Any) -> None:
        manifest["finished_at"] = datetime.now(UTC).isoformat()
        manifest.update(extra)
        self.write_json("manifest.json", manifest)
