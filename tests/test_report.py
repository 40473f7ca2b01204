"""Reports: the offline HTML report of each landed experiment, opened in a real (headless) browser."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from tokensde.experiments import REGISTRY
from tokensde.report.viewer import project_to_sphere

CLI = [sys.executable, "-m", "tokensde.cli"]
EXPERIMENTS = sorted(REGISTRY)


def test_projection_is_exact_in_three_dimensions_and_on_the_sphere():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 7, 3))
    x /= np.linalg.norm(x, axis=-1, keepdims=True)
    y, frac = project_to_sphere(x)
    assert frac == 1.0 and np.array_equal(y, x)
    # tokens living in a 3-D subspace of R^6: the projection keeps their overlaps exactly
    q, _ = np.linalg.qr(rng.normal(size=(6, 3)))
    z, frac = project_to_sphere(x @ q.T)
    assert frac == pytest.approx(1.0)
    np.testing.assert_allclose(np.einsum("kid,kjd->kij", z, z), np.einsum("kid,kjd->kij", x, x), atol=1e-12)
    w, frac = project_to_sphere(rng.normal(size=(4, 9, 8)))
    assert frac < 1.0
    np.testing.assert_allclose(np.linalg.norm(w, axis=-1), 1.0)


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_report_is_self_contained(quick_run, name):
    out, _ = quick_run(name)
    page = (out / "report.html").read_text()
    assert "default-src 'none'" in page  # the browser refuses every network request
    assert not re.search(r"<script[^>]+src=", page) and "<link" not in page
    assert 'id="r0-viewer"' in page and "Plotly.newPlot" in page


def test_report_command_rebuilds_and_compares(quick_run, tmp_path):
    a, _ = quick_run("scaling-regimes")
    b, _ = quick_run("phase-diagram")
    (a / "report.html").unlink()
    r = subprocess.run([*CLI, "report", str(a)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert (a / "report.html").exists()
    cmp = tmp_path / "cmp.html"
    r = subprocess.run([*CLI, "report", str(a), str(b), "--out", str(cmp)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    page = cmp.read_text()
    assert "scaling-regimes" in page and "phase-diagram" in page and 'id="r1-viewer"' in page
    r = subprocess.run([*CLI, "report", str(tmp_path / "nothing")], capture_output=True, text=True)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "dirs" in r.stderr


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail("the browser test needs Debian's chromium (apt-get install chromium); scripts/test.sh installs it")
    return path


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=_chromium(),
            headless=True,
            args=["--no-sandbox", "--enable-unsafe-swiftshader", "--use-angle=swiftshader", "--ignore-gpu-blocklist"],
        )
        yield b
        b.close()


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_report_renders_offline_in_chromium(quick_run, browser, name):
    out, _ = quick_run(name)
    ctx = browser.new_context(viewport={"width": 1300, "height": 900})
    page = ctx.new_page()
    requests, errors = [], []
    page.route(
        "**/*",
        lambda route: (
            route.continue_()
            if route.request.url.startswith("file:")
            else (requests.append(route.request.url), route.abort())[1]
        ),
    )
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto((out / "report.html").as_uri())
    page.wait_for_function("() => document.querySelectorAll('.js-plotly-plot').length > 0", timeout=60_000)
    figures = page.locator("div[data-figure] .js-plotly-plot")
    n = figures.count()
    assert n >= 1
    for i in range(n):
        # every interactive figure has drawn its SVG (or its table) with at least one trace
        assert page.evaluate(
            "(el) => el.querySelectorAll('.main-svg').length > 0 && el.data.length > 0", figures.nth(i).element_handle()
        )
    viewer = page.locator("#r0-viewer")
    assert viewer.locator("canvas").count() >= 1  # the WebGL scene exists
    before = page.evaluate("() => Array.from(document.getElementById('r0-viewer')._fullData[1].x)")
    viewer.locator(".updatemenu-button").first.click()  # "play"
    page.wait_for_function(
        "() => document.getElementById('r0-viewer')._fullLayout.sliders[0].active >= 3", timeout=30_000
    )
    # the tokens move: the viewer animates through depth (the frame's data may land after the slider moves)
    page.wait_for_function(
        "(before) => { const x = Array.from(document.getElementById('r0-viewer')._fullData[1].x);"
        " return x.some((v, i) => Math.abs(v - before[i]) > 1e-6); }",
        arg=before,
        timeout=30_000,
    )
    after = page.evaluate("() => Array.from(document.getElementById('r0-viewer')._fullData[1].x)")
    assert not np.allclose(before, after)
    assert requests == [], requests
    assert errors == [], errors
    ctx.close()
