"""What a user sees in MLflow's UI, in the distribution's headless Chromium, from the printed links.

A fresh browser profile is a first visit: nothing remembered, so the pages show what the links
and the logged data alone produce, without any search or toggle (the one click picks a figure
among Compare's common artifacts). Screenshots go to ``test-artifacts/mlflow-ui/``
(``$IDHHPC_TEST_ARTIFACTS/mlflow-ui/``), which CI keeps. ``0_experiment_without_workflow_query``
records why the links carry ``workflowType``: MLflow 3.17 opens a bare experiment URL on its
GenAI overview whatever the experiment's tags say.
"""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path

import pytest

from tests.support.browser import Browser, chromium_path

pytestmark = [pytest.mark.mlflow, pytest.mark.slow]

SHOTS = Path(os.environ.get("IDHHPC_TEST_ARTIFACTS", Path(__file__).resolve().parents[2] / "test-artifacts"))
SHOTS = SHOTS / "mlflow-ui"
CLOSE_ASSISTANT = "document.querySelector('button[aria-label=Close]')?.click()"
"""The MLflow assistant panel opens by itself on a first visit and covers a third of the page."""


def _link(printed: str, label: str) -> str:
    match = re.search(rf"{label}:\s+(http://\S+)", printed)
    assert match, f"the launcher printed no '{label}:' link:\n{printed}"
    return match.group(1)


async def _visit(browser: Browser, url: str, wait_text: str, shot: str, height: int = 1000, settle_s: float = 3.0):
    page = await browser.new_page(1600, height)
    await page.goto(url)
    rendered = await page.wait_for_text(wait_text, timeout_s=90, settle_s=settle_s)
    await page.eval(CLOSE_ASSISTANT)
    await asyncio.sleep(0.5)
    await page.screenshot(SHOTS / f"{shot}.png")
    return page, rendered


PAGES = (("1_runs", "runs", "test/auc", 1000), ("2_charts", "charts", "val/auc", 1600),
         ("3_compare_folds", "compare folds", "Parameters", 2200),
         ("4_evaluate_report", "evaluation", "report.html", 1400))
"""(screenshot, printed link label, text that only rendered data holds, viewport height)."""
BIG_IMAGES = "[...document.images].filter(i => i.naturalWidth > 600).length"
"""Figures, not icons: every project figure is wider than 600 px."""


async def _tour(printed: str) -> dict[str, dict]:
    seen: dict[str, dict] = {}
    async with Browser() as browser:
        for shot, label, wait, height in PAGES:
            page, rendered = await _visit(browser, _link(printed, label), wait, shot, height)
            seen[shot] = {"rendered": rendered, "text": await page.text(), "url": await page.eval("location.href"),
                          "frames": await page.eval("document.querySelectorAll('iframe').length")}
            if shot == "3_compare_folds":
                seen[shot]["history"] = await _show_common_figure(page, "history.png", "3b_compare_folds_history")
            await page.close()
        plain = _link(printed, "runs").split("/runs?")[0]  # what clicking the experiment in the list opens
        page, _ = await _visit(browser, plain, "idhhpc", "0_experiment_without_workflow_query", 1000, settle_s=5)
        seen["0_plain"] = {"url": await page.eval("location.href")}
        await page.close()
        figure = _link(printed, "evaluation").replace("/artifacts/report.html", "/artifacts/roc.png")
        page, rendered = await _visit(browser, figure, "roc.png", "5_evaluate_roc", 1000)
        seen["5_evaluate_roc"] = {"rendered": rendered, "images": await page.eval(BIG_IMAGES)}
        await page.close()
    return seen


async def _show_common_figure(page, name: str, shot: str) -> int:
    """Compare's common artifacts: picking ``name`` shows it for every run side by side."""
    assert await page.click_text(name), f"no '{name}' among Compare's artifacts"
    await page.wait_for(f"{BIG_IMAGES} >= 2", 60, 2)
    await page.eval("[...document.querySelectorAll('*')].find(e => e.childElementCount === 0 && "
                    "e.textContent.trim() === 'Artifacts')?.scrollIntoView()")
    await asyncio.sleep(1)
    await page.screenshot(SHOTS / f"{shot}.png")
    return await page.eval(BIG_IMAGES)


@pytest.fixture(scope="module")
def tour(tracked_launch):
    if chromium_path() is None:
        pytest.skip("chromium is not installed (scripts/test.sh installs it with apt-get)")
    return asyncio.run(_tour(tracked_launch["printed"]))


def test_runs_link_lands_on_the_model_training_runs_table_with_headline_columns(tour, tracked_launch):
    runs = tour["1_runs"]
    assert runs["rendered"] and "workflowType=machine_learning" in runs["url"] and "/runs?" in runs["url"]
    assert "/overview" not in runs["url"]  # not redirected to the GenAI overview
    assert tracked_launch["config"].name in runs["text"]  # the launch row
    for column in ("test/auc", "cv/mean_auc", "Version", "Source"):
        assert column in runs["text"]
    assert tracked_launch["commit"][:6] in runs["text"]  # the Version column (short commit)


def test_charts_link_shows_the_training_curves_and_headline_bars(tour):
    charts = tour["2_charts"]
    assert charts["rendered"]
    for card in ("val/auc", "train/loss", "test/auc"):
        assert card in charts["text"]


def test_compare_page_of_the_folds_shows_the_differing_params(tour):
    compare = tour["3_compare_folds"]
    assert compare["rendered"]
    for text in ("fold-0", "fold-1", "split_hash", "Parallel Coordinates Plot", "history.png"):
        assert text in compare["text"]
    assert compare["history"] >= 2  # the training-history figure of each fold, side by side


def test_evaluate_artifacts_open_on_the_html_report_and_render_figures(tour):
    report = tour["4_evaluate_report"]
    assert report["rendered"] and report["frames"] >= 1  # report.html renders in MLflow's sandboxed frame
    for name in ("roc.png", "reliability.png", "metrics_table.json", "report.md"):
        assert name in report["text"]
    assert tour["5_evaluate_roc"]["rendered"] and tour["5_evaluate_roc"]["images"] >= 1
