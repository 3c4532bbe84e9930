"""The UI in a real headless browser (Debian's Chromium driven by Playwright):
the asset graph with its groups, and a per-case asset's preview image. The
screenshots are kept under test-artifacts/ as evidence."""
from pathlib import Path

from playwright.sync_api import sync_playwright

from tests.e2e.dagster_dev import REPO, dagster_dev

CHROMIUM = "/usr/bin/chromium"
# Flags that keep Chromium off the network this machine does not have.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
                 "--disable-background-networking", "--disable-component-update"]
ARTIFACTS = REPO / "test-artifacts"
GROUPS = ["cases", "teacher", "fusion", "quality", "student", "inference"]


def _dismiss_welcome(page) -> None:
    """The UI greets a new browser profile with a newsletter dialog, a moment
    after the page renders; skip it when it shows up."""
    skip = page.get_by_role("button", name="Skip")
    try:
        skip.first.wait_for(timeout=10_000)
    except Exception:  # noqa: BLE001 - no dialog this time
        return
    skip.first.click()
    page.locator(".bp5-overlay-backdrop").first.wait_for(state="detached", timeout=10_000)


def test_ui_shows_groups_and_a_case_preview(pipeline_run, tiny_data_root):
    instance, _, _, work = pipeline_run
    ARTIFACTS.mkdir(exist_ok=True)
    env = {"FLARE_DATA_ROOT": str(tiny_data_root), "FLARE_WORK_ROOT": str(work), "FLARE_PROFILE": "test",
           "FLARE_SENSORS": "off"}  # only the runs this test launches
    log = Path(instance.root_directory) / "browser_dagster_dev.log"
    with dagster_dev(Path(instance.root_directory), env, log) as port, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        page.goto(f"http://127.0.0.1:{port}/asset-groups")
        page.get_by_text("Global asset lineage").first.wait_for(timeout=60_000)
        _dismiss_welcome(page)
        for group in GROUPS:
            page.get_by_text(group, exact=True).first.wait_for(timeout=30_000)
        page.screenshot(path=str(ARTIFACTS / "asset_graph.png"))

        page.goto(f"http://127.0.0.1:{port}/assets/training_case?partition=FLARE23_0001")
        page.get_by_text("[Show Markdown]").first.wait_for(timeout=60_000)
        _dismiss_welcome(page)
        page.get_by_text("[Show Markdown]").first.click(timeout=30_000)
        preview = page.locator('img[src^="data:image/png;base64,"]').first
        preview.wait_for(timeout=30_000)
        assert preview.evaluate("img => img.naturalWidth") > 32
        page.screenshot(path=str(ARTIFACTS / "training_case_preview.png"))
        browser.close()
    assert (ARTIFACTS / "asset_graph.png").stat().st_size > 10_000
