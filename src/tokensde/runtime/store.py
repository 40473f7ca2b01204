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

    DIR/.tokensde.lock     the advisory lock (``fcntl.flock``) held by the one process writing DIR

Provenance. Every unit file and checkpoint records the hash of what produced it
(:func:`provenance`: the experiment, its config, the tokensde version and the
unit's own description). Re-running with the same ``--out`` and the same config
resumes: a finished unit is read back only when its file is whole (its rows hash
to its ``sha256``) *and* its provenance is the one the current run would write;
anything else (truncated, corrupt, edited, or produced by another config or
version) is recomputed with a one-line warning. Rows always pass through their
canonical JSON (:func:`canonical_rows`), fresh or resumed, so a resumed run's table
is bitwise the table of an uninterrupted one.

What a directory must be to be written (:meth:`RunStore.inspect`): absent, empty,
or a run of tokensde (a valid ``manifest.json``) of the same experiment and config.
A non-empty directory without a valid manifest (a user's own files, or unit files
whose manifest was lost) is refused unless ``force``; a run of another experiment
or config is always refused. One process writes a run directory at a time: a
second gets a one-line :class:`~tokensde.errors.UsageError` naming the holder.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import platform
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import UsageError
from ..files import atomic_write
from ..report.style import FORMATS

try:  # advisory locks (POSIX); elsewhere a run directory is not locked
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "LOCK_NAME",
    "FileCheckpoint",
    "RunStore",
    "atomic_write",
    "canonical_rows",
    "environment",
    "normalize_rows",
    "provenance",
    "unit_provenance",
]

LOCK_NAME = ".tokensde.lock"
_CK_PROVENANCE = "__tokensde_provenance__"
_CK_SHA256 = "__tokensde_sha256__"


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


def _plain_json(obj: Any) -> Any:
    """``obj`` as it reads back from JSON (tuples -> lists, paths -> strings, ...)."""
    return json.loads(json.dumps(obj, default=str, allow_nan=True))


def provenance(experiment: str, config: dict[str, Any], unit: dict[str, Any]) -> str:
    """The sha256 of what produces a unit's rows: experiment name, config, tokensde version and the unit.

    ``config`` is the config as JSON data (``cfg.model_dump(mode="json")``); keys are sorted,
    so the hash does not depend on the order in which they were written.
    """
    from .. import __version__

    doc = {"experiment": experiment, "config": config, "tokensde": __version__, "unit": unit}
    data = json.dumps(doc, sort_keys=True, separators=(",", ":"), default=str, allow_nan=True)
    return hashlib.sha256(data.encode()).hexdigest()


def unit_provenance(experiment: str, cfg: Any, unit: dict[str, Any]) -> str:
    """:func:`provenance` of a unit of ``experiment`` under the validated config ``cfg`` (a pydantic model)."""
    return provenance(experiment, cfg.model_dump(mode="json"), unit)


def _arrays_digest(arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for k in sorted(arrays):
        a = np.ascontiguousarray(arrays[k])
        h.update(json.dumps([k, a.dtype.str, list(a.shape)]).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


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

    The file also holds the sha256 of its arrays and the unit's :func:`provenance`;
    ``load`` gives ``None`` (the unit starts again, with a one-line warning through
    ``warn``) when the file is truncated or corrupt, when its arrays were edited, or
    when it was written for another config, version or unit.

    Picklable (a path and a string), so it travels to process-pool and Ray workers; on a
    multi-machine Ray cluster the run directory must be on a file system the workers
    share, or a unit interrupted there starts again from its beginning.
    """

    def __init__(self, path: Path, provenance: str | None = None, warn: Callable[[str], None] | None = None) -> None:
        self.path = Path(path)
        self.provenance = provenance
        self.warn = warn

    def _reject(self, why: str) -> None:
        (self.warn or _stderr)(f"warning: checkpoint {self.path} {why}; the unit starts again")

    def load(self) -> dict[str, np.ndarray] | None:
        """The saved arrays, or ``None`` if there is no checkpoint or it is not this unit's, whole and unedited."""
        if not self.path.exists():
            return None
        try:
            with np.load(self.path, allow_pickle=False) as f:
                arrays = {k: f[k] for k in f.files}
        except Exception:  # noqa: BLE001 - truncated or corrupt: start the unit again
            self._reject("is truncated or corrupt")
            return None
        digest = arrays.pop(_CK_SHA256, None)
        origin = arrays.pop(_CK_PROVENANCE, None)
        if digest is None or str(digest) != _arrays_digest(arrays):
            self._reject("does not match its checksum (edited or corrupt)")
            return None
        if self.provenance is not None and (origin is None or str(origin) != self.provenance):
            self._reject("was written by another config, tokensde version or unit")
            return None
        return arrays

    def save(self, arrays: dict[str, np.ndarray]) -> None:
        plain = {k: np.asarray(v) for k, v in arrays.items()}
        if _CK_SHA256 in plain or _CK_PROVENANCE in plain:
            raise ValueError(f"checkpoint arrays may not be named {_CK_SHA256} or {_CK_PROVENANCE}")
        plain[_CK_SHA256] = np.asarray(_arrays_digest(plain))
        if self.provenance is not None:
            plain[_CK_PROVENANCE] = np.asarray(self.provenance)
        buf = io.BytesIO()
        np.savez(buf, **plain)  # type: ignore[arg-type]
        atomic_write(self.path, buf.getvalue())

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def _valid_manifest(obj: Any) -> bool:
    return isinstance(obj, dict) and isinstance(obj.get("experiment"), str) and isinstance(obj.get("config"), dict)


def _why(e: OSError) -> str:
    return e.strerror or type(e).__name__


class RunStore:
    """A run directory for one experiment and one config.

    Use :meth:`session` (a context manager) to write into it: it checks the directory,
    takes the lock, writes the manifest and releases the lock at the end. :meth:`inspect`
    makes the same checks without writing anything (run it before costly preparations).
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.units = self.root / "units"
        self._lock_fd: int | None = None

    # ------------------------------------------------------------------ what may be written
    def inspect(self, experiment: str, config: dict[str, Any], force: bool = False) -> dict[str, Any] | None:
        """Check that this run may write the directory; return the manifest to resume, or ``None``.

        Writes nothing. Raises :class:`~tokensde.errors.UsageError` (one line naming ``out``)
        when the path is a file, when the directory holds a run of another experiment or
        config, or when it is not empty and holds no valid manifest (unless ``force``).
        """
        root, config = self.root, _plain_json(config)
        if root.exists() and not root.is_dir():
            raise UsageError(f"out: {root} exists and is not a directory; choose a directory for the run")
        if not root.exists():
            return None
        manifest_path = root / "manifest.json"
        try:
            entries = [p.name for p in root.iterdir() if p.name != LOCK_NAME]
        except OSError as e:
            raise UsageError(f"out: cannot read the directory {root}: {_why(e)}") from None
        if "manifest.json" in entries:
            try:
                old = json.loads(manifest_path.read_bytes())
            except (OSError, ValueError, RecursionError):
                old = None
            if not _valid_manifest(old):
                if force:
                    return None
                raise UsageError(
                    f"out: {manifest_path} is not a valid tokensde manifest, so {root} is not resumed into;"
                    " choose another --out, or pass --force to run there (only unit files this config produced"
                    " are reused)"
                )
            if old.get("experiment") != experiment or old.get("config") != config:
                raise UsageError(
                    f"out: {root} holds a run of {old.get('experiment')} with another config; choose another --out"
                )
            return dict(old)
        if entries and not force:
            what = (
                "unit files but no manifest.json (the record of their config)"
                if "units" in entries
                else f"{len(entries)} entr{'y' if len(entries) == 1 else 'ies'} that are not a tokensde run"
            )
            raise UsageError(
                f"out: {root} is not empty and holds {what}; choose a new or empty directory,"
                " or pass --force to write the run there"
            )
        return None

    # ------------------------------------------------------------------ one writer at a time
    def _acquire(self) -> None:
        """Take the directory's advisory lock (non-blocking); ``UsageError`` naming the holder if taken."""
        path = self.root / LOCK_NAME
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise UsageError(f"out: cannot write in {self.root}: {_why(e)}") from None
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                try:
                    holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown"
                finally:
                    os.close(fd)
                raise UsageError(
                    f"out: {self.root} is being written by another tokensde process ({holder});"
                    " wait for it to finish or choose another --out"
                ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} since {datetime.now(UTC).isoformat(timespec='seconds')}\n".encode(), 0)
        self._lock_fd = fd

    def release(self) -> None:
        """Release the lock (the lock file stays: removing it would race with a new writer)."""
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            os.close(fd)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the directory's lock (it must exist) for the ``with`` block, e.g. to rebuild its report."""
        self._acquire()
        try:
            yield
        finally:
            self.release()

    @contextlib.contextmanager
    def session(
        self,
        experiment: str,
        config: dict[str, Any],
        device: str,
        execution: dict[str, Any] | None = None,
        force: bool = False,
        extra: dict[str, Any] | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Check, create if needed, lock and (re)write the manifest; yield it; release the lock at the end.

        A directory this call created is removed again if the checks made under the lock
        refuse it, so a refused run leaves nothing behind.
        """
        self.inspect(experiment, config, force)
        created = not self.root.exists()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UsageError(f"out: cannot create the directory {self.root}: {_why(e)}") from None
        self._acquire()  # refused: the holder's lock file and directory are left to the holder
        try:
            try:
                manifest = self.start(experiment, config, device, execution, force, extra)
            except UsageError:
                if created:  # refused under the lock (another process got there first): leave nothing behind
                    with contextlib.suppress(OSError):
                        (self.root / LOCK_NAME).unlink()
                        self.root.rmdir()
                raise
            yield manifest
        finally:
            self.release()

    def start(
        self,
        experiment: str,
        config: dict[str, Any],
        device: str,
        execution: dict[str, Any] | None = None,
        force: bool = False,
        extra: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Write the manifest of a new run, or update that of the run being resumed (checked by :meth:`inspect`).

        ``execution``, when given, is recorded by :meth:`record_execution` (the runner records it
        later, once it knows the units to run); it never makes a resume refused. Call it with the
        lock held (:meth:`session` does).
        """
        config = _plain_json(config)
        old = self.inspect(experiment, config, force)
        if old is not None:
            manifest = old
            manifest["resumed_at"] = manifest.get("resumed_at", []) + [datetime.now(UTC).isoformat()]
            for key in ("finished_at", "elapsed_s", "units_resumed", "figures"):
                manifest.pop(key, None)  # set again when this execution finishes
        else:
            manifest = {
                "experiment": experiment,
                "config": config,
                "seed": config.get("seed"),
                "started_at": datetime.now(UTC).isoformat(),
            }
        manifest.update(extra or {})
        manifest["environment"] = environment(device)
        if execution is not None:
            self.record_execution(manifest, execution, write=False)
        self.write_json("manifest.json", manifest)
        return manifest

    def record_execution(self, manifest: dict[str, Any], execution: dict[str, Any], write: bool = True) -> None:
        """Record ``execution`` (executor, workers, threads per unit as resolved, threads requested, Ray
        address) as ``manifest["execution"]`` and append it to ``manifest["executions"]`` (one entry per start
        or resume); write the manifest unless ``write`` is false. The runner calls it once it knows which
        units will run (the threads of ``"auto"`` depend on them), with the lock held."""
        manifest["execution"] = execution
        manifest["executions"] = manifest.get("executions", []) + [{**execution, "at": datetime.now(UTC).isoformat()}]
        if write:
            self.write_json("manifest.json", manifest)

    def unit_path(self, unit_id: str) -> Path:
        return self.units / f"{unit_id}.json"

    def checkpoint_dir(self) -> Path:
        return self.root / "checkpoints"

    def checkpoint(self, unit_id: str, provenance: str | None = None) -> FileCheckpoint:
        return FileCheckpoint(self.checkpoint_dir() / f"{unit_id}.npz", provenance)

    def check_unit(self, unit_id: str, provenance: str | None = None) -> tuple[list[dict[str, Any]] | None, str | None]:
        """``(rows, None)`` for a finished unit, ``(None, None)`` if absent, ``(None, why)`` if unusable.

        Unusable: unreadable, truncated or not JSON, another unit's file, no checksum,
        rows whose canonical JSON does not hash to the stored ``sha256`` (edited or
        corrupt), or, when ``provenance`` is given, a file without that provenance
        (produced by another config, tokensde version or unit description).
        """
        path = self.unit_path(unit_id)
        if not path.exists():
            return None, None
        try:
            payload = json.loads(path.read_bytes())
        except OSError as e:
            return None, f"cannot be read ({e.strerror})"
        except (ValueError, RecursionError):
            return None, "is truncated or not valid JSON"
        if not isinstance(payload, dict) or payload.get("id") != unit_id or not isinstance(payload.get("rows"), list):
            return None, "does not hold this unit's rows"
        if not isinstance(payload.get("sha256"), str):
            return None, "has no checksum"
        if rows_digest(canonical_rows(payload["rows"])) != payload["sha256"]:
            return None, "does not match its checksum"
        if provenance is not None and payload.get("provenance") != provenance:
            if "provenance" not in payload:
                return None, "has no provenance record"
            return None, "was produced by another config, tokensde version or unit"
        rows: list[dict[str, Any]] = payload["rows"]
        return rows, None

    def load_unit(self, unit_id: str, provenance: str | None = None) -> list[dict[str, Any]] | None:
        """Rows of a finished unit, or ``None`` if absent, truncated, corrupt, edited or of another provenance."""
        return self.check_unit(unit_id, provenance)[0]

    def save_unit(
        self, unit_id: str, rows: list[dict[str, Any]], provenance: str | None = None
    ) -> list[dict[str, Any]]:
        """Write the unit atomically with the checksum of its rows and its provenance; returns the rows as read back."""
        data = canonical_rows(rows)
        head_obj: dict[str, Any] = {"id": unit_id}
        if provenance is not None:
            head_obj["provenance"] = provenance
        head_obj["sha256"] = rows_digest(data)
        head = json.dumps(head_obj)[:-1]
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
