"""The offline HTML report of a run directory, and side-by-side comparisons of several runs.

A report is one self-contained file: plotly.js is inlined, static figures are
embedded as data URIs, and a Content-Security-Policy forbids every network
request (``default-src 'none'``), so it opens offline and makes no request.
Contents: the verdict and the checks behind it, the run's configuration and
environment, the interactive figures of the experiment
(:mod:`tokensde.report.figures`), the 3-D sphere viewer of the recorded token
trajectories (``trajectories.npz``, :mod:`tokensde.report.viewer`) and the
static figures.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import UsageError
from ..files import atomic_write
from .figures import interactive_figures
from .viewer import sphere_viewer

__all__ = ["GENERATOR", "build_report", "check_report_target", "compare_reports", "is_report", "load_run"]

#: the ``<meta name="generator">`` of every page written here: what may be overwritten
GENERATOR = "tokensde-report"
_MARK = f"<meta name='generator' content='{GENERATOR}'>".encode()

CSP = (
    "default-src 'none'; script-src 'unsafe-inline' 'unsafe-eval'; style-src 'unsafe-inline'; "
    "img-src data: blob:; font-src data:; worker-src blob:"
)

CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1200px; color: #222; }
h1 .PASS { color: #1a7f37; } h1 .FAIL { color: #c62828; }
table.kv { border-collapse: collapse; font-size: 0.85em; }
table.kv td, table.kv th { border: 1px solid #ddd; padding: 3px 8px; text-align: left; vertical-align: top; }
td.ok { color: #1a7f37; font-weight: bold; } td.FAIL { color: #c62828; font-weight: bold; }
.fig { margin: 1em 0; } img.static { max-width: 100%; border: 1px solid #eee; }
.row { display: flex; gap: 1em; } .row > div { flex: 1; min-width: 0; }
code { font-size: 0.9em; } p.warning { color: #b26a00; }
"""


def _read_json(path: Path, what: str, keys: tuple[str, ...]) -> dict[str, Any]:
    try:
        obj = json.loads(path.read_bytes())
    except (ValueError, RecursionError):
        raise ValueError(f"{path} is not valid JSON") from None
    if not isinstance(obj, dict) or any(k not in obj for k in keys):
        raise ValueError(f"{path} is not a tokensde {what} (an object with {', '.join(keys)})")
    return obj


def load_run(run_dir: Path) -> dict[str, Any]:
    """Manifest, verdict, results table and trajectories (if any) of a finished run directory.

    Raises ``FileNotFoundError`` when a file is missing and ``ValueError`` when the manifest,
    the verdict or the table cannot be read as such. A ``trajectories.npz`` that cannot be
    read (truncated, corrupt) leaves the viewer out, with a line in ``run["warnings"]``.
    """
    run_dir = Path(run_dir)
    for name in ("manifest.json", "verdict.json", "results.parquet"):
        if not (run_dir / name).exists():
            raise FileNotFoundError(f"{run_dir} is not a finished run directory (no {name})")
    manifest = _read_json(run_dir / "manifest.json", "manifest", ("experiment", "config"))
    verdict = _read_json(run_dir / "verdict.json", "verdict", ("verdict", "checks"))
    if not isinstance(manifest["experiment"], str) or not isinstance(manifest["config"], dict):
        raise ValueError(f"{run_dir / 'manifest.json'} is not a tokensde manifest")
    try:
        table = pd.read_parquet(run_dir / "results.parquet")
    except Exception as e:  # noqa: BLE001 - pyarrow raises its own types for a damaged file
        raise ValueError(f"{run_dir / 'results.parquet'} cannot be read as Parquet ({type(e).__name__})") from None
    run: dict[str, Any] = {
        "dir": run_dir,
        "manifest": manifest,
        "verdict": verdict,
        "table": table,
        "trajectory": None,
        "warnings": [],
    }
    traj = run_dir / "trajectories.npz"
    if traj.exists():
        try:
            with np.load(traj, allow_pickle=False) as z:
                x = np.asarray(z["x"])
                times = np.asarray(z["times"], dtype=float)
                title, time_label = str(z["title"]), str(z["time_label"])
            if x.ndim != 3 or len(times) != len(x):
                raise ValueError("shapes do not match")
            run["trajectory"] = {"x": x, "times": times, "title": title, "time_label": time_label}
        except Exception as e:  # noqa: BLE001 - truncated zip, missing key, wrong shapes: no viewer
            run["warnings"].append(f"{traj} cannot be read ({type(e).__name__}); the sphere viewer is left out")
    return run


def is_report(path: Path) -> bool:
    """Whether ``path`` is a page written by this module (its head carries :data:`GENERATOR`)."""
    try:
        with open(path, "rb") as f:
            return _MARK in f.read(4096)
    except OSError:
        return False


def check_report_target(out: Path, force: bool) -> None:
    """Refuse (``UsageError``) to write a page at ``out`` over a directory or a file that is not a report."""
    if out.is_dir():
        raise UsageError(f"out: {out} is a directory; name the page to write, e.g. {out / 'compare.html'}")
    if out.exists() and not force and not is_report(out):
        raise UsageError(f"out: {out} exists and is not a report of tokensde; choose another path or pass --force")


def _plotly_js() -> str:
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()


def _fig_div(fig: Any, div_id: str) -> str:
    """A figure's ``<div>``: a plotly figure, or a plain dict of one (written as it is, not validated)."""
    import plotly.io as pio

    return pio.to_html(
        fig,
        full_html=False,
        include_plotlyjs=False,
        include_mathjax=False,
        div_id=div_id,
        config={"responsive": True},
        validate=not isinstance(fig, dict),
    )


def _kv(rows: list[tuple[str, Any]]) -> str:
    cells = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows)
    return f'<table class="kv">{cells}</table>'


def _checks(verdict: dict[str, Any]) -> str:
    rows = []
    for c in verdict.get("checks", []):
        cls = "ok" if c["passed"] else "FAIL"
        rows.append(
            f'<tr><td class="{cls}">{cls}</td><td>{html.escape(c["name"])}</td><td>{html.escape(c["detail"])}</td></tr>'
        )
    return '<table class="kv"><tr><th></th><th>check</th><th>numbers</th></tr>' + "".join(rows) + "</table>"


def _static(run_dir: Path, names: list[str]) -> str:
    out = []
    for p in names:
        png = Path(p)
        png = png if png.is_absolute() else run_dir / png
        png = png.with_suffix(".png")
        if png.exists():
            data = base64.b64encode(png.read_bytes()).decode()
            out.append(
                f'<div class="fig"><img class="static" alt="{png.stem}" src="data:image/png;base64,{data}"></div>'
            )
    return "".join(out)


def _page(title: str, body: str) -> str:
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"{_MARK.decode()}"
        f"<meta http-equiv='Content-Security-Policy' content=\"{CSP}\">"
        f"<title>{html.escape(title)}</title><style>{CSS}</style>"
        f"<script>{_plotly_js()}</script></head><body>{body}</body></html>"
    )


def _run_sections(run: dict[str, Any], prefix: str, viewer: bool = True) -> str:
    m, v = run["manifest"], run["verdict"]
    env = m.get("environment", {})
    parts = [
        f'<h1>{html.escape(m["experiment"])} <span class="{v["verdict"]}">{v["verdict"]}</span></h1>',
        "<p>"
        + html.escape(
            f"seed {m.get('seed')} · started {m.get('started_at', '?')} · "
            f"{m.get('elapsed_s', float('nan')):.1f} s · device {env.get('device', '?')} · "
            f"tokensde {env.get('tokensde', '?')}, torch {env.get('torch', '?')} · git {env.get('git_revision')}"
        )
        + "</p>",
        *(f"<p class='warning'>{html.escape(w)}</p>" for w in run.get("warnings", [])),
        "<h2>Verdict</h2>",
        _checks(v),
        "<h2>Figures</h2>",
    ]
    figs = interactive_figures(m["experiment"], run["table"], m.get("config", {}))
    for i, (name, fig) in enumerate(figs.items()):
        parts.append(f'<div class="fig" data-figure="{html.escape(name)}">{_fig_div(fig, f"{prefix}fig{i}")}</div>')
    if viewer and run["trajectory"] is not None:
        t = run["trajectory"]
        parts.append("<h2>Token trajectories</h2>")
        fig = sphere_viewer(t["x"], t["times"], t["title"], t["time_label"])
        parts.append(f'<div class="fig">{_fig_div(fig, f"{prefix}viewer")}</div>')
    parts.append("<h2>Configuration</h2>")
    parts.append(_kv(sorted(m.get("config", {}).items())))
    parts.append("<h2>Environment</h2>")
    parts.append(_kv(sorted(env.items())))
    parts.append("<h2>Static figures</h2>")
    parts.append(_static(run["dir"], m.get("figures", [])))
    return "".join(parts)


def _write(out: Path, page: str) -> None:
    atomic_write(out, page.encode("utf-8"))


def build_report(run_dir: Path, force: bool = False) -> Path:
    """Write ``run_dir/report.html`` from the run's files; returns its path.

    An existing ``report.html`` that is not a page of tokensde is not overwritten
    (:class:`~tokensde.errors.UsageError`) unless ``force``.
    """
    run = load_run(Path(run_dir))
    out = Path(run_dir) / "report.html"
    check_report_target(out, force)
    page = _page(f"tokensde: {run['manifest']['experiment']}", _run_sections(run, "r0-"))
    _write(out, page)
    return out


def compare_reports(run_dirs: list[Path], out: Path, force: bool = False) -> Path:
    """One page with several runs side by side (verdicts first, then each run's figures in a column).

    ``out`` may be new or a page of tokensde; anything else is refused unless ``force``.
    """
    out = Path(out)
    check_report_target(out, force)
    runs = [load_run(Path(d)) for d in run_dirs]
    head = ["<h1>Comparison</h1>", '<table class="kv"><tr><th>run</th><th>experiment</th><th>seed</th><th>verdict</th>']
    head.append("<th>checks passed</th></tr>")
    for r in runs:
        checks = r["verdict"].get("checks", [])
        head.append(
            f"<tr><td>{html.escape(str(r['dir']))}</td><td>{html.escape(r['manifest']['experiment'])}</td>"
            f'<td>{r["manifest"].get("seed")}</td><td class="{"ok" if r["verdict"]["verdict"] == "PASS" else "FAIL"}">'
            f"{r['verdict']['verdict']}</td><td>{sum(c['passed'] for c in checks)}/{len(checks)}</td></tr>"
        )
    head.append("</table>")
    cols = "".join(f"<div>{_run_sections(r, f'r{i}-', viewer=True)}</div>" for i, r in enumerate(runs))
    page = _page("tokensde: comparison", "".join(head) + f'<div class="row">{cols}</div>')
    _write(out, page)
    return out
