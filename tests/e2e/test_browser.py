"""The UI in a real headless browser (Debian's Chromium driven by Playwright):
the asset graph with its groups, the previews of chosen partitions and the
charts of global assets, each checked to render at full size. The screenshots
are kept under test-artifacts/ as evidence.

An asset's page ignores a bare `?partition=` (its Overview shows the newest
materialization); the Partitions tab selects one: `?view=partitions&partition=KEY`,
the link the UI itself builds, shows that partition's latest materialization
under a heading with the key."""
from pathlib import Path

from playwright.sync_api import sync_playwright

from tests.e2e.dagster_dev import REPO, dagster_dev

CHROMIUM = "/usr/bin/chromium"
# Flags that keep Chromium off the network this machine does not have.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
                 "--disable-background-networking", "--disable-component-update"]
ARTIFACTS = REPO / "test-artifacts"
GROUPS = ["cases", "teacher", "fusion", "quality", "student", "inference"]
# (asset, partition, metadata entry holding the picture); alt texts start with the case id.
PARTITION_PICTURES = [("training_case", "FLARE23_0001", "preview"),
                      ("organ_fused_label", "FLARE23_0001", "preview"),
                      ("prediction", "FLARE23Ts_0001", "preview")]
GLOBAL_PICTURES = [("student_weights", "training_curve"), ("evaluation_summary", "plot"),
                   ("label_quality_summary", "plot")]
MIN_PICTURE_PX = 600  # previews are ~1100 px wide, charts 900


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


def _open_picture(page, entry: str):
    """Open the [Show Markdown] dialog of metadata entry `entry`; return the
    dialog and its image once the image has loaded."""
    row = page.locator("tr", has=page.get_by_text(entry, exact=True))
    row.get_by_text("[Show Markdown]").first.click(timeout=30_000)
    dialog = page.get_by_role("dialog")
    image = dialog.locator('img[src^="data:image/png;base64,"]')
    image.first.wait_for(timeout=30_000)
    page.wait_for_function("img => img.complete", arg=image.first.element_handle(), timeout=30_000)
    return dialog, image


def _assert_rendered(image) -> dict:
    assert image.count() == 1
    shown = image.first.evaluate("img => ({alt: img.alt, complete: img.complete, natural: img.naturalWidth, "
                                 "naturalHeight: img.naturalHeight, shown: img.getBoundingClientRect().width})")
    assert shown["complete"] and shown["natural"] >= MIN_PICTURE_PX and shown["naturalHeight"] > 200, shown
    assert shown["shown"] >= MIN_PICTURE_PX, shown  # not scaled down to illegible
    return shown


def _close(dialog) -> None:
    dialog.get_by_role("button", name="Close").click()
    dialog.wait_for(state="detached", timeout=10_000)


def test_ui_shows_groups_partition_previews_and_charts(pipeline_run, tiny_data_root):
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

        for asset, partition, entry in PARTITION_PICTURES:
            page.goto(f"http://127.0.0.1:{port}/assets/{asset}?view=partitions&partition={partition}")
            # The detail panel's heading: the key and its status (the list row has only the key).
            heading = page.locator(f'[data-tooltip="{partition}"]').filter(has_text="Materialized")
            heading.wait_for(timeout=60_000)
            assert heading.inner_text().startswith(partition)
            page.get_by_text("[Show Markdown]").first.wait_for(timeout=60_000)
            _dismiss_welcome(page)
            dialog, image = _open_picture(page, entry)
            shown = _assert_rendered(image)
            assert shown["alt"].startswith(f"{partition} "), shown  # this partition's picture, not another's
            page.screenshot(path=str(ARTIFACTS / f"{asset}_{partition}.png"))
            _close(dialog)

        for asset, entry in GLOBAL_PICTURES:
            page.goto(f"http://127.0.0.1:{port}/assets/{asset}")
            page.get_by_text(entry, exact=True).first.wait_for(timeout=60_000)
            dialog, image = _open_picture(page, entry)
            _assert_rendered(image)
            page.screenshot(path=str(ARTIFACTS / f"{asset}.png"))
            _close(dialog)
        browser.close()
    for shot in ["asset_graph"] + [f"{a}_{p}" for a, p, _ in PARTITION_PICTURES] + [a for a, _ in GLOBAL_PICTURES]:
        assert (ARTIFACTS / f"{shot}.png").stat().st_size > 10_000, shot
