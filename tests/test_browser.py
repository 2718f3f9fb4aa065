"""The dashboard in a real browser: every page, upload, batch size, live traffic.

Starts ``streamlit run app.py`` on a free loopback port and drives it with Playwright and
Debian's chromium. Screenshots of each page go to $BATCHLAB_SCREENSHOTS (``make
screenshots`` points it at docs/img/ for the README), else to test-results/screenshots.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from core import DEMO_MODELS, build_demo_model
from tests.test_reliability import HOSTILE

ROOT = Path(__file__).resolve().parent.parent
SHOTS = Path(os.environ.get("BATCHLAB_SCREENSHOTS") or ROOT / "test-results" / "screenshots")
PAGES = {"models": "Models", "batching": "Batching", "warmup": "Warm-up", "ab_test": "A/B test",
         "experiments": "Experiments", "monitor": "Monitor"}
pytestmark = pytest.mark.browser


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_dashboard(data_dir: Path, address: str = "127.0.0.1",
                     log_name: str = "streamlit.log", **env_extra: str):
    port = _free_port()
    env = {**os.environ, "BATCHLAB_DATA_DIR": str(data_dir), **env_extra}
    (ROOT / "test-results").mkdir(exist_ok=True)
    log_path = ROOT / "test-results" / log_name
    log = open(log_path, "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless=true",
         f"--server.address={address}", f"--server.port={port}",
         "--browser.gatherUsageStats=false"],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.read().decode().strip() == "ok":
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"streamlit did not start (see {log_path})")
        time.sleep(0.2)
    return url, proc, log


def _stop_dashboard(proc: subprocess.Popen, log) -> None:
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


_ENGINE_TOKEN = "browser-tests-engine-token"
_ENGINE_PORT = _free_port()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    # The dashboard's engine server on a known port with a known token: a test can then
    # change the engine the way a notebook would, and watch the pages follow.
    url, proc, log = _start_dashboard(tmp_path_factory.mktemp("server-data"),
                                      BATCHLAB_TOKEN=_ENGINE_TOKEN,
                                      BATCHLAB_ENGINE_PORT=str(_ENGINE_PORT))
    yield url
    _stop_dashboard(proc, log)


def dashboard_engine():
    """A client of the engine server the ``server`` dashboard started."""
    from core.serving import RemoteEngine
    return RemoteEngine(f"http://127.0.0.1:{_ENGINE_PORT}", token=_ENGINE_TOKEN)


def figure_value(text: str) -> float:
    """A tile's compact figure as a number: '1,355' -> 1355, '17.6k' -> 17600, '-' -> 0."""
    text = text.strip().replace(",", "")
    if text in ("", "-"):
        return 0.0
    scale = {"k": 1e3, "M": 1e6, "G": 1e9}.get(text[-1], 1.0)
    return float(text[:-1] if scale != 1.0 else text) * scale


def wait_ready(page: Page) -> None:
    """Wait until Streamlit has finished the current run."""
    page.wait_for_selector('[data-testid="stApp"]')
    expect(page.locator('[data-testid="stStatusWidget"]')).to_have_count(0, timeout=30_000)


def open_app(page: Page, url: str, title: str = "Models") -> None:
    """Load the app and wait for a page to be drawn (the first load builds the engine)."""
    page.goto(url)
    expect(page.get_by_role("heading", name=title, level=1)).to_be_visible(timeout=60_000)
    expect(page.locator('[data-testid="stSidebar"] [data-testid="stPageLink"]').first
           ).to_be_visible(timeout=30_000)
    wait_ready(page)


def click_until(page: Page, button, done, tries: int = 3) -> None:
    """Click ``button`` until ``done`` (a locator) shows: Streamlit can drop a click that
    lands while a live fragment is rerunning (seen under a busy CPU); a person clicks
    again, and so does the test, at most ``tries`` times."""
    for k in range(tries):
        wait_ready(page)
        button.click()
        try:
            expect(done).to_be_visible(timeout=10_000)
            return
        except AssertionError:
            if k == tries - 1:
                raise


def give_file(page: Page, uploader, path: Path, button, shown: str | None = None) -> None:
    """Give ``uploader`` a file and wait until the server has it (``button`` enabled, the
    file's name ``shown``). Streamlit drops an upload that lands during a rerun, as it
    drops a key press: given again then (at most three times)."""
    for _ in range(3):
        uploader.set_input_files(str(path))
        try:
            expect(button).to_be_enabled(timeout=10_000)
            if shown:
                expect(page.get_by_text(shown, exact=True)).to_be_visible(timeout=10_000)
            break
        except AssertionError:
            wait_ready(page)
    expect(button).to_be_enabled()
    wait_ready(page)


def upload_model_file(page: Page, path: Path) -> None:
    """Give the model uploader ``path`` and wait until the server has it (the page proposes
    the file's name). An upload that lands during a rerun is dropped by Streamlit (an open
    page redraws when the engine changes elsewhere): given again, at most three times."""
    name = page.get_by_role("textbox", name="Register as")
    for k in range(3):
        page.locator('[data-testid="stFileUploaderDropzoneInput"]').first.set_input_files(
            str(path))
        try:
            expect(name).to_have_value(path.stem, timeout=10_000)
            break
        except AssertionError:
            if k == 2:
                raise
            wait_ready(page)
    wait_ready(page)


def inspect_model(page: Page, name: str) -> None:
    """Pick ``name`` in the Models page's Inspect box and wait until the page is drawn for
    it (the box shows it and no run is going on)."""
    page.locator('[data-testid="stSelectbox"]', has_text="Model").first.click()
    page.keyboard.type(name)
    page.keyboard.press("Enter")
    wait_ready(page)
    expect(page.get_by_role("combobox", name="Model", exact=True)).to_have_value(name)
    wait_ready(page)


def no_exception(page: Page) -> None:
    expect(page.locator('[data-testid="stException"]')).to_have_count(0)


def shot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.locator('[data-testid="stMain"]').evaluate("e => e.scrollTo(0, 0)")
    page.mouse.wheel(0, -5000)
    page.wait_for_timeout(300)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def go(page: Page, title: str) -> None:
    page.locator('[data-testid="stSidebar"] [data-testid="stPageLink"] a', has_text=title).click()
    expect(page.get_by_role("heading", name=title, level=1)).to_be_visible(timeout=20_000)
    wait_ready(page)


def scroll_to(page: Page, locator, attempts: int = 20) -> None:
    """Scroll ``locator`` into view; a live fragment's rerun may replace the element between
    finding it and scrolling (then it is found again), a bounded number of times."""
    from playwright.sync_api import Error as PlaywrightError
    for k in range(attempts):
        try:
            locator.scroll_into_view_if_needed(timeout=5_000)
            return
        except PlaywrightError:
            if k == attempts - 1:
                raise
            page.wait_for_timeout(100)


def test_an_open_page_follows_settings_changed_elsewhere(server, page: Page):
    """Another tab or a notebook changes a model's batch settings: an open Batching page
    redraws its widgets from the engine within seconds, without a click (before, its
    slider and radio kept the old values beside a caption with the new ones)."""
    open_app(page, server)
    go(page, "Batching")
    slider = page.locator('[data-testid="stSlider"]', has_text="Max batch size"
                          ).get_by_role("slider")
    expect(slider).to_have_attribute("aria-valuetext", "32")
    engine = dashboard_engine()
    try:
        engine.configure("mlp", max_batch_size=16, policy="fixed_window")
        expect(slider).to_have_attribute("aria-valuetext", "16", timeout=30_000)
        expect(page.get_by_role("radio", name=re.compile("fixed window"))).to_be_checked()
        no_exception(page)
        # Arrow keys pressed faster than the page reruns all count (the page wrote the
        # engine's value back into the slider on every run, undoing presses in flight:
        # 24 presses moved it 22 steps)
        wait_ready(page)
        slider.focus()
        for _ in range(10):
            slider.press("ArrowRight")
        expect(slider).to_have_attribute("aria-valuetext", "26", timeout=30_000)
        wait_ready(page)
        deadline = time.monotonic() + 30
        while engine.batch_config("mlp").max_batch_size != 26:
            assert time.monotonic() < deadline, engine.batch_config("mlp")
            time.sleep(0.1)
        expect(slider).to_have_attribute("aria-valuetext", "26")
        # Real inputs and a warm-up made elsewhere reach open pages too (a second tab kept
        # "generated" and "not warm" until its own rerun).
        go(page, "Models")
        inspect_model(page, "tiny")
        expect(page.get_by_text(re.compile("send this model generated"))).to_be_visible()
        engine.set_inputs("tiny", b"a,b,c,d\n1,2,3,4\n", "elsewhere.csv")
        expect(page.get_by_text(re.compile(r"send this model real: elsewhere.csv"))
               ).to_be_visible(timeout=30_000)
        go(page, "Warm-up")   # (it opens on the model just inspected)
        expect(page.get_by_text(re.compile("tiny is not warm"))).to_be_visible()
        engine.warmup("tiny", iterations=2)
        expect(page.get_by_text(re.compile("tiny is warm"))).to_be_visible(timeout=30_000)
        no_exception(page)
    finally:
        engine.configure("mlp", max_batch_size=32, policy="deadline")
        engine.clear_inputs("tiny")
        engine.close()


def test_aimd_and_the_replay_under_every_policy(server, page: Page):
    """Issue 28: the Batching page offers Clipper's AIMD with its cap shown, and replays the
    same arrivals under every registered policy with goodput and a verdict."""
    open_app(page, server)
    engine = dashboard_engine()
    try:
        engine.configure("mlp", policy="aimd", latency_slo_ms=0.5)
        # Running while the replay is asked for: it replays the last 2 s of arrivals (on a
        # busy machine, waiting for a short run to end left none in them).
        engine.start_traffic("mlp", rate_rps=1500, duration_s=60.0, seed=1)
        go(page, "Batching")
        expect(page.get_by_role("radio", name=re.compile("AIMD"))).to_be_checked()
        expect(page.get_by_text(re.compile(r"AIMD: batches capped at \d+ of 32 rows now"))
               ).to_be_visible(timeout=30_000)
        verdict = page.get_by_text(re.compile(r"answered (the most|[\d.]+% of requests) within 50 ms"))
        click_until(page, page.get_by_role("button", name="Replay the last 2 s under each policy"),
                    verdict.or_(page.get_by_text(re.compile(r"replay(ing|ed) ")).first))
        engine.stop_traffic("mlp")          # the replay has its arrivals: the CPU is its own
        expect(verdict).to_be_visible(timeout=180_000)   # five policies, 2 s of arrivals each
        expect(page.locator('[data-testid="stDataFrame"]').last).to_be_visible()
        for name in ("deadline", "fixed_window", "adaptive", "aimd"):
            # .first: a fragment's rerun may hold the old chart and the new one for a moment
            expect(page.locator("text.gtitle", has_text=f"{name}: p50").first).to_be_visible()
        assert not page.evaluate(CHART_FAULTS_JS), page.evaluate(CHART_FAULTS_JS)
        no_exception(page)
        SHOTS.mkdir(parents=True, exist_ok=True)
        scroll_to(page, verdict)
        page.wait_for_timeout(300)
        page.screenshot(path=str(SHOTS / "batching_policies.png"))
    finally:
        engine.stop_traffic("mlp")
        engine.configure("mlp", policy="deadline", latency_slo_ms=None)
        engine.close()


def test_an_arrivals_file_is_read_and_a_file_past_the_limit_refused(server, page: Page,
                                                                     tmp_path):
    """The Batching page's arrivals file: what it holds is said before anything runs, and
    a file past what a replay takes is refused in words, unparsed (it was parsed whole on
    every rerun: +4 GB a tab for 190 MiB; an adversary)."""
    from core.lab.replay import MAX_REPLAY_ARRIVALS
    good = tmp_path / "arrivals.csv"
    good.write_text("arrived_s,rows\n0.0,2\n0.5,4\n1.0,3\n")
    many = tmp_path / "many.csv"
    many.write_bytes(b"arrived_s\n" + b"0\n" * (MAX_REPLAY_ARRIVALS + 1))
    open_app(page, server)
    go(page, "Batching")
    page.get_by_text("Replay arrivals from a file").click()
    uploader = page.locator('[data-testid="stFileUploader"]').filter(
        has_text="arrived_s").locator('[data-testid="stFileUploaderDropzoneInput"]')
    button = page.get_by_role("button", name="Replay this file under each policy")
    give_file(page, uploader, good, button)
    expect(page.get_by_text("3 arrivals over 1.00 s (3 req/s on average), 3.00 rows each "
                            "on average")).to_be_visible()
    big = tmp_path / "big.csv"   # (accepted, then the replay failed; a newcomer)
    big.write_text("arrived_s,rows\n0.0,2\n0.001,500\n0.002,1\n")
    uploader.set_input_files(str(big))
    expect(page.get_by_text("The file has requests of up to 500 rows; mlp takes at most "
                            "32 rows a request now (Max batch size, above)")).to_be_visible(
        timeout=30_000)
    expect(page.get_by_text("3 arrivals over 2 ms (1,500 req/s on average)", exact=False)
           ).to_be_visible()
    expect(button).to_be_disabled()
    uploader.set_input_files(str(many))
    expect(page.get_by_text("Cannot replay many.csv: the arrivals file has 200,002 lines; "
                            "a replay takes at most 200,000 arrivals")).to_be_visible(
        timeout=30_000)
    expect(button).to_have_count(0)
    no_exception(page)


def test_a_bandit_moves_the_split_on_the_ab_page(server, page: Page):
    """Issue 28, part 3: arm B waits up to 30 ms for company at this low load, so it misses
    a 10 ms SLO; the bandit moves the traffic to A and the page shows the split, the reward
    rates and the regret."""
    open_app(page, server)
    engine = dashboard_engine()
    try:
        engine.configure("clf-v2", max_wait_ms=30.0)
        engine.create_ab("bandit-b", "clf-v1", "clf-v2", mode="bandit", bandit_slo_ms=10.0,
                         seed=0, replace=True)
        engine.start_traffic("bandit-b", rate_rps=100, duration_s=6.0, seed=2)
        go(page, "A/B test")
        combo = page.get_by_role("combobox", name="Experiment", exact=True)
        if combo.input_value() != "bandit-b":
            page.locator('[data-testid="stSelectbox"]', has_text="Experiment").first.click()
            page.keyboard.type("bandit-b")
            page.keyboard.press("Enter")
            wait_ready(page)
        engine.wait_traffic("bandit-b", timeout_s=60)
        expect(page.get_by_text(re.compile(r"A is the better arm with probability"))
               ).to_be_visible(timeout=30_000)
        # .first: a fragment's rerun may hold the old chart and the new one for a moment
        expect(page.locator("text.gtitle", has_text="The bandit's split and its regret").first
               ).to_be_visible()
        share = engine.ab_report("bandit-b").bandit["share_b"]
        assert share < 0.2, share
        assert not page.evaluate(CHART_FAULTS_JS), page.evaluate(CHART_FAULTS_JS)
        no_exception(page)
        SHOTS.mkdir(parents=True, exist_ok=True)
        scroll_to(page, page.locator("text.gtitle", has_text="The bandit's split").first)
        page.wait_for_timeout(300)
        page.screenshot(path=str(SHOTS / "ab_bandit.png"))
    finally:
        engine.stop_traffic("bandit-b")
        if "bandit-b" in engine.ab_experiments():
            engine.delete_ab("bandit-b")
        engine.configure("clf-v2", max_wait_ms=5.0)
        engine.close()


def test_headings_carry_no_anchor_links(server, page: Page):
    """A heading's anchor link ("#history") led a newcomer to a 404 JSON page: headings
    have none."""
    open_app(page, server)
    for title in ("Experiments", "Batching", "Monitor"):
        go(page, title)
        expect(page.locator('[data-testid="stHeaderActionElements"] a')).to_have_count(0)


def test_deep_links_on_a_fresh_server_use_the_app_navigation(server, page: Page):
    # Watch the whole load for Streamlit's own list of the files in pages/ ("ab test",
    # "common", ...): it must never appear, not even for a moment before app.py runs.
    page.add_init_script("""
        window.__rawNavSeen = false;
        new MutationObserver(() => {
            if (document.querySelector('[data-testid="stSidebarNav"]')) window.__rawNavSeen = true;
        }).observe(document, {childList: true, subtree: true});
    """)
    # First request of the server process goes straight to a page, not to "/".
    open_app(page, f"{server}/monitor", "Monitor")
    assert page.evaluate("window.__rawNavSeen") is False
    nav = page.locator('[data-testid="stSidebar"]')
    expect(nav).to_contain_text("A/B test")          # app.py's navigation, not file names
    expect(page.get_by_text("ENGINE", exact=True)).to_be_visible()  # app.py's sidebar ran
    no_exception(page)
    # the Models page at its name too, as every other page (it read "Page not found" and
    # fell back to "/"; a newcomer)
    open_app(page, f"{server}/models", "Models")
    expect(page.get_by_text("Upload a model", exact=True)).to_be_visible()
    assert page.url.endswith("/models"), page.url
    assert "not found" not in page.inner_text("body").lower()
    no_exception(page)


# Text a page must never show: a template placeholder left unformatted, a raw dict.
PLACEHOLDER = re.compile(r"\{[a-z_][a-z_0-9.\[\]'\"]*\}|\{'[^']*': ")

# Every metric value, button label and caption that is cut off by its box (its text is
# wider than the box shows), as "page: text".
CUT_OFF_JS = """() => [...document.querySelectorAll(
    '[data-testid="stMetricValue"] div, [data-testid="stMetricValue"], '
    + '[data-testid="stMetricLabel"] *, '
    + '[data-testid="stBaseButton-secondary"] p, [data-testid="stBaseButton-primary"] p')]
    .filter(e => e.offsetParent !== null && e.scrollWidth > e.clientWidth + 1)
    .map(e => e.innerText)"""


# The cosmetic class of chart faults, as drawn: a title under the plotly toolbar, an axis
# whose tick labels repeat (a log axis labelled "5, 2, 100, 5, 2, 10"; a histogram's
# "1 1 2"), and an axis that runs negative (nothing drawn is below zero; all-zero seconds
# drew -1 to 1). As "chart title: what".
CHART_FAULTS_JS = """() => {
  const out = [];
  const overlap = (a, b) => b.width > 0 && a.width > 0 && a.left < b.right
      && b.left < a.right && a.top < b.bottom && b.top < a.bottom;
  for (const plot of document.querySelectorAll('.js-plotly-plot')) {
    if (plot.offsetParent === null) continue;
    const t = plot.querySelector('.gtitle');
    const title = t ? t.textContent : '(untitled)';
    const bar = plot.querySelector('.modebar');
    if (t && bar && overlap(t.getBoundingClientRect(), bar.getBoundingClientRect()))
      out.push(title + ': title under the toolbar');
    for (const ax of plot.querySelectorAll('.xaxislayer-above, .yaxislayer-above')) {
      const labels = [...ax.querySelectorAll('text')].map(e => e.textContent).filter(s => s);
      if (new Set(labels).size !== labels.length)
        out.push(title + ': repeated tick labels ' + labels.join(', '));
    }
    // Nothing Batchlab draws is below zero (counts, times, rates); an empty chart's x
    // axis neither.
    const empty = [...plot.querySelectorAll('.annotation-text')]
      .some(e => /^no /.test(e.textContent));
    const neg = [...plot.querySelectorAll(
        '.yaxislayer-above text' + (empty ? ', .xaxislayer-above text' : ''))]
      .map(e => e.textContent).filter(s => /^[\u2212-]/.test(s));
    if (neg.length) out.push(title + ': negative ticks ' + neg.join(', '));
  }
  return out;
}"""


def test_every_page_loads_without_exception_placeholders_or_cut_figures(server, page: Page):
    page.set_viewport_size({"width": 1400, "height": 1000})
    open_app(page, server)
    for path, title in PAGES.items():
        go(page, title)
        no_exception(page)
        # each tab names its page (every one read "Batchlab"; a newcomer with several open)
        expect(page).to_have_title(f"{title} · Batchlab")
        expect(page.locator('[data-testid="stAlert"]', has_text="Error")).to_have_count(0)
        text = page.locator('[data-testid="stApp"]').inner_text()
        assert not PLACEHOLDER.search(text), (title, PLACEHOLDER.search(text).group(0))
        cut = page.evaluate(CUT_OFF_JS)
        assert not cut, f"{title}: cut off: {cut}"
        faults = page.evaluate(CHART_FAULTS_JS)
        assert not faults, f"{title}: {faults}"


def test_real_inputs_from_the_models_page(server, page: Page, tmp_path):
    """A CSV of real rows for 'tiny' through the Models page: the engine then draws from
    it, and the page says so; a file of the wrong width is refused with why."""
    good, bad = tmp_path / "rows.csv", tmp_path / "wide.csv"
    good.write_text("a,b,c,d\n" + "\n".join(f"{i},{i},{i},{i}" for i in range(5)) + "\n")
    bad.write_text("a,b,c,d,e\n1,2,3,4,5\n")
    open_app(page, server)
    inspect_model(page, "tiny")  # drawn for tiny (its uploader is tiny's) before a file
    expect(page.get_by_text(re.compile("send this model generated"))).to_be_visible()
    uploader = page.locator('[data-testid="stFileUploaderDropzoneInput"]').nth(1)
    use = page.get_by_role("button", name="Use these inputs")
    give_file(page, uploader, bad, use)
    use.click()
    expect(page.get_by_text(re.compile(r"Not used: wide.csv: the model takes 4 features"))
           ).to_be_visible(timeout=20_000)
    give_file(page, uploader, good, use, shown="rows.csv")
    use.click()
    expect(page.get_by_text("tiny now gets real: rows.csv (5 samples).")).to_be_visible(
        timeout=20_000)
    engine = dashboard_engine()
    try:
        assert engine.input_source("tiny") == "real: rows.csv (5 samples)"
        assert set(engine.sample_input("tiny", rows=20, seed=1)[:, 0]) <= {0, 1, 2, 3, 4}
        page.get_by_role("button", name="Back to random inputs").click()
        expect(page.get_by_text(re.compile("send this model generated"))).to_be_visible(
            timeout=20_000)
    finally:
        engine.clear_inputs("tiny")
        engine.close()
    no_exception(page)


def test_a_folder_of_images_from_the_models_page(server, page: Page, tmp_path):
    """A folder of images for an image model through the Models page, with the
    preprocessing picked there: the model then sees each image as declared."""
    from PIL import Image

    from tests.helpers import channel_mean_model

    shots = tmp_path / "shots"
    shots.mkdir()
    Image.new("RGB", (30, 20), (255, 0, 0)).save(shots / "red.png")
    Image.new("RGB", (20, 30), (0, 0, 255)).save(shots / "blue.png")
    open_app(page, server)   # the dashboard starts its engine server
    engine = dashboard_engine()
    try:
        engine.load_model(channel_mean_model(["N", 3, 8, 8]), name="img-means")
        open_app(page, server)
        inspect_model(page, "img-means")
        folder = page.locator('[data-testid="stFileUploaderDropzoneInput"]').nth(2)
        use = page.get_by_role("button", name="Use these inputs")
        preset = page.get_by_role("combobox", name="Image preprocessing")
        for _ in range(3):   # a choice made during a rerun can be lost: made again
            preset.click()
            page.keyboard.type("unit")
            page.keyboard.press("Enter")
            wait_ready(page)
            if preset.input_value() == "unit":
                break
        expect(preset).to_have_value("unit")
        give_file(page, folder, shots, use)
        use.click()
        expect(page.get_by_text(re.compile(
            r"img-means now gets real: shots.zip, 8×8 RGB NCHW, unit \(2 samples\)"))
        ).to_be_visible(timeout=20_000)
        x = engine.sample_input("img-means", rows=2, seed=None)
        means = sorted(map(tuple, engine.predict("img-means", x).outputs["mean"].round(3)))
        assert means == [(0.0, 0.0, 1.0), (1.0, 0.0, 0.0)]
        scroll_to(page, page.get_by_text("Inputs for generated load"))
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / "models_images.png"))
    finally:
        engine.unload_model("img-means")
        engine.close()
    no_exception(page)


def test_a_value_out_of_range_is_refused_in_words_in_the_browser(server, page: Page):
    """The browser's own bounds turned a box red and the page went on with its last valid
    value ("This request: 3 row(s)" after Rows 0). Unbounded, the value reaches the engine,
    whose refusal is shown; nothing is run."""
    open_app(page, server)
    inspect_model(page, "tiny")
    rows = page.get_by_role("spinbutton", name="Rows")
    rows.fill("0")
    rows.press("Enter")
    wait_ready(page)
    page.get_by_role("button", name="Run one prediction").click()
    expect(page.get_by_text("Prediction failed: rows must be a whole number of at least 1, "
                            "got 0")).to_be_visible(timeout=20_000)
    expect(rows).to_have_value("0")
    no_exception(page)


def test_upload_good_and_bad_models(server, page: Page, tmp_path):
    good = tmp_path / "uploaded-tiny.onnx"
    good.write_bytes(build_demo_model("tiny"))
    bad = tmp_path / "not-a-model.onnx"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 100)
    open_app(page, server)

    # A PNG named .onnx, and one named .png (a file that is not .onnx at all is refused in
    # words on the page: the browser's own filter showed only a red "!" on hover).
    png = tmp_path / "picture.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 100)
    for path in (bad, png):
        upload_model_file(page, path)
        page.get_by_role("button", name="Load model").click()
        expect(page.get_by_text(re.compile(f"Could not load {re.escape(path.name)}: .*PNG "
                                           "image"))).to_be_visible(timeout=20_000)

    # More of the hostile corpus through the uploader: each refused on the page, with why.
    for case in HOSTILE:
        data, message = HOSTILE[case]
        path = tmp_path / (re.sub(r"\W+", "-", case) + ".onnx")
        path.write_bytes(data)
        upload_model_file(page, path)
        page.get_by_role("button", name="Load model").click()
        alert = page.locator('[data-testid="stAlert"]', has_text=f"Could not load {path.name}")
        expect(alert).to_be_visible(timeout=20_000)
        expect(alert).to_contain_text(re.compile(message))
        no_exception(page)

    upload_model_file(page, good)
    page.get_by_role("button", name="Load model").click()
    expect(page.get_by_text("Loaded 'uploaded-tiny'")).to_be_visible(timeout=20_000)
    wait_ready(page)
    # The sidebar counts it: every demo model plus the upload (at its next refresh: it is
    # drawn before the page, so the run that loaded it showed the count from before).
    expect(page.locator('[data-testid="stSidebar"] [data-testid="stMetric"]',
                        has_text="Models")).to_contain_text(
        re.compile(rf"(?<!\d){len(DEMO_MODELS) + 1}(?!\d)"), timeout=20_000)
    # Listed: it can be picked in the Inspect box.
    inspect_model(page, "uploaded-tiny")
    expect(page.get_by_text(re.compile("Batchable: leading dimension"))).to_be_visible()
    # The same name again: the page names its own checkbox, not the engine's argument.
    wait_ready(page)
    page.get_by_role("button", name="Load model").click()
    clash = page.locator('[data-testid="stAlert"]', has_text="Could not load uploaded-tiny.onnx")
    expect(clash).to_contain_text("tick 'Hot-swap a model of this name' to replace it",
                                  timeout=20_000)
    expect(clash).not_to_contain_text("replace=True")
    no_exception(page)


def test_batch_size_and_live_traffic(server, page: Page):
    page.set_viewport_size({"width": 1400, "height": 1000})
    open_app(page, server)
    shot(page, "models")
    go(page, "Batching")
    slider = page.locator('[data-testid="stSlider"]', has_text="Max batch size").get_by_role("slider")
    for size in range(33, 37):  # one step at a time: a key press during a rerun can be lost
        live = page.get_by_text(re.compile(rf"Live: max_batch_size={size}\b"))
        for _ in range(3):  # pressed again only if the slider itself did not move
            if slider.get_attribute("aria-valuetext") == str(size - 1):
                slider.focus()
                page.keyboard.press("ArrowRight")
            try:
                expect(live).to_be_visible(timeout=10_000)  # the engine's config changed
                break
            except AssertionError:
                continue
        expect(live).to_be_visible()
        wait_ready(page)

    rate = page.get_by_role("spinbutton", name="Rate (requests/s)")
    rate.fill("300")
    rate.press("Enter")
    wait_ready(page)
    page.get_by_role("button", name="Start traffic").click()
    expect(page.locator('[data-testid="stSidebar"]').get_by_text(
        re.compile("Traffic running to mlp"))).to_be_visible(timeout=20_000)

    def served() -> int:
        text = page.locator('[data-testid="stSidebar"] [data-testid="stMetric"]',
                            has_text="Requests/s").locator('[data-testid="stMetricValue"]')
        return figure_value(text.inner_text())

    # The live fragment refreshes on its own: requests/s climbs without any click.
    deadline = time.monotonic() + 30
    while served() < 100:
        assert time.monotonic() < deadline, "requests/s never rose above 100"
        page.wait_for_timeout(250)
    expect(page.locator(".js-plotly-plot").first).to_be_visible()
    page.wait_for_timeout(1500)
    assert not page.evaluate(CUT_OFF_JS), "a tile is cut off on the Batching page"
    assert not page.evaluate(CHART_FAULTS_JS), page.evaluate(CHART_FAULTS_JS)
    shot(page, "batching")
    go(page, "Monitor")
    total = page.locator('[data-testid="stMain"] [data-testid="stMetric"]',
                         has_text="Requests").first.locator('[data-testid="stMetricValue"]')
    first = total.inner_text()
    page.wait_for_timeout(2500)
    second = total.inner_text()
    assert figure_value(second) > figure_value(first), "numbers did not move"
    assert not page.evaluate(CUT_OFF_JS), "a figure is cut off on the Monitor page"
    assert not page.evaluate(CHART_FAULTS_JS), page.evaluate(CHART_FAULTS_JS)
    assert page.locator('[data-testid="stMetricLabel"] *').count() >= 8  # what the scan reads
    shot(page, "monitor")
    no_exception(page)

    # A hidden tab draws nothing (the browser says so; the page reruns with live parts off),
    # and comes back to life when shown again.
    def set_hidden(hidden: bool) -> None:
        page.evaluate("""h => {
            Object.defineProperty(document, "visibilityState",
                                  {value: h ? "hidden" : "visible", configurable: true});
            document.dispatchEvent(new Event("visibilitychange"));
        }""", hidden)

    set_hidden(True)
    before = total.inner_text()
    for _ in range(8):  # until the rerun that stops the live parts has been drawn
        page.wait_for_timeout(2000)
        now = total.inner_text()
        if now == before:
            break
        before = now
    page.wait_for_timeout(3000)  # traffic still runs at 300 req/s: a live tile would move
    assert total.inner_text() == before, "a hidden tab kept redrawing"
    set_hidden(False)
    deadline = time.monotonic() + 20
    while total.inner_text() == before:
        assert time.monotonic() < deadline, "the tab did not come back to life when shown"
        page.wait_for_timeout(250)
    no_exception(page)

    go(page, "Warm-up")
    page.get_by_role("button", name="Warm up").click()
    expect(page.get_by_text(re.compile("mlp is warm"))).to_be_visible(timeout=60_000)
    shot(page, "warmup")

    go(page, "A/B test")
    page.get_by_role("button", name="Create experiment").click()
    # The rerun may not have begun when wait_ready looks; a click on "Start traffic" while
    # it runs can be lost (seen once in CI), so wait for the new experiment's panel first.
    expect(page.get_by_text(re.compile(r"Arm B: clf-v2"))).to_be_visible(timeout=20_000)
    wait_ready(page)
    page.get_by_role("button", name="Start traffic").click()
    sidebar = page.locator('[data-testid="stSidebar"]')
    expect(sidebar.get_by_text(re.compile("Traffic running to .*clf-ab"))).to_be_visible(
        timeout=20_000)
    expect(page.get_by_text(re.compile(r"Arm B: clf-v2"))).to_be_visible(timeout=20_000)
    page.wait_for_timeout(3000)
    assert not page.evaluate(CHART_FAULTS_JS), page.evaluate(CHART_FAULTS_JS)
    shot(page, "ab_test")
    page.get_by_role("button", name="Stop traffic").click()
    expect(sidebar.get_by_text(re.compile("Traffic running to mlp$"))).to_be_visible(
        timeout=20_000)
    go(page, "Batching")
    click_until(page, page.get_by_role("button", name="Stop traffic"),
                page.locator('[data-testid="stSidebar"]').get_by_text("No traffic running."))

    go(page, "Experiments")
    loads = page.get_by_role("textbox", name="Loads (comma-separated)")
    loads.fill("300, 1500")
    loads.press("Enter")
    wait_ready(page)
    target = page.get_by_role("spinbutton", name="p99 target (ms)")
    target.fill("200")
    target.press("Enter")
    wait_ready(page)
    page.get_by_role("button", name="Run sweep").click()
    # Each point runs until its windows agree (up to 10 windows): allow for a busy machine.
    expect(page.get_by_text(re.compile(r"meets p99 (<=|≤) 200 ms at [\d,]+ req/s"))).to_be_visible(
        timeout=180_000)
    expect(page.locator(".js-plotly-plot").first).to_be_visible()
    assert not page.evaluate(CHART_FAULTS_JS), page.evaluate(CHART_FAULTS_JS)
    shot(page, "experiments")
    no_exception(page)

    # The sweep's HTML report: one file that opens offline with its charts drawn.
    with page.expect_download(timeout=60_000) as download:
        page.get_by_role("button", name="HTML report").click()
    saved = SHOTS.parent / "report.html"
    download.value.save_as(saved)
    report = page.context.new_page()
    report.route("**/*", lambda route: route.continue_() if route.request.url.startswith(
        "file:") else route.abort())  # offline: nothing but the file itself may load
    report.goto(saved.resolve().as_uri())
    expect(report.get_by_role("heading", name="Pinned for every point")).to_be_visible()
    expect(report.locator(".js-plotly-plot .main-svg").first).to_be_visible(timeout=30_000)
    assert report.locator(".js-plotly-plot").count() >= 4
    assert report.locator(".js-plotly-plot .scatterlayer .trace, .js-plotly-plot .barlayer .trace"
                          ).count() >= 4, "the report's charts have no data drawn"
    report.screenshot(path=str(SHOTS / "report.png"), full_page=False)
    report.close()
    expect(page.locator('[data-testid="stSidebar"]').get_by_text("No traffic running.")
           ).to_be_visible(timeout=20_000)
    no_exception(page)


def test_a_sweep_outlives_its_page_and_shows_in_a_second_tab(server, page: Page):
    page.set_viewport_size({"width": 1400, "height": 1000})
    open_app(page, server)
    go(page, "Experiments")
    expect(page.get_by_role("combobox", name="Model")).to_have_value("mlp")
    loads = page.get_by_role("textbox", name="Loads (comma-separated)")
    loads.fill("300")
    loads.press("Enter")
    wait_ready(page)
    expect(page.get_by_role("combobox", name="Model")).to_have_value("mlp")
    page.get_by_role("button", name="Run sweep").click()
    expect(page.get_by_text(re.compile(r"Sweep of mlp: "))).to_be_visible(timeout=20_000)
    go(page, "Monitor")  # leave the page that started it: the sweep goes on in the engine
    # One line for the one job (while a rerun draws, a line that moved can show twice for
    # a moment: a count that settles at one, not a strict locator that fails on sight).
    expect(page.locator('[data-testid="stSidebar"]').get_by_text(
        re.compile(r"sweep of mlp"))).to_have_count(1, timeout=20_000)
    # A second tab sees the same job and, when it ends, its result.
    other = page.context.new_page()
    other.set_viewport_size({"width": 1400, "height": 1000})
    open_app(other, server)
    go(other, "Experiments")
    expect(other.locator('[data-testid="stAlert"]', has_text="max_batch_size")).to_be_visible(
        timeout=90_000)
    expect(other.locator(".js-plotly-plot").first).to_be_visible()
    no_exception(other)
    go(page, "Experiments")  # and the first tab, back on the page, shows it too
    expect(page.locator('[data-testid="stAlert"]', has_text="max_batch_size")).to_be_visible(
        timeout=20_000)
    no_exception(page)
    other.close()


def _engine_server_pid(dashboard_url: str) -> int:
    """The engine server the dashboard on ``dashboard_url`` started (its child)."""
    port = dashboard_url.rsplit(":", 1)[1]
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().split(b"\0")
            if b"core.server" not in cmd:
                continue
            ppid = (d / "stat").read_text().rsplit(")", 1)[1].split()[1]
            parent = (Path("/proc") / ppid / "cmdline").read_bytes()
        except OSError:
            continue
        if f"--server.port={port}".encode() in parent:
            return int(d.name)
    raise AssertionError("the dashboard started no engine server")


def test_a_remote_model_added_from_the_models_page(server, page: Page):
    """The dashboard's engine (its child process) adds a model another OIP server serves
    (an engine server in this test's process), and the Batching page shows it as remote."""
    from core import Engine
    from core.serving import EngineServer
    back = Engine()
    other = EngineServer(back, port=0).start()
    try:
        page.set_viewport_size({"width": 1400, "height": 1200})
        open_app(page, server)
        page.get_by_role("textbox", name="Server URL").fill(other.url)
        page.get_by_role("textbox", name="Model on the server").fill("tiny")
        page.get_by_role("textbox", name="Name in Batchlab").fill("tiny-elsewhere")
        page.get_by_role("textbox", name="Name in Batchlab").press("Enter")
        wait_ready(page)
        page.get_by_role("button", name="Add remote model").click()
        expect(page.get_by_text("Added 'tiny-elsewhere'")).to_be_visible(timeout=30_000)
        wait_ready(page)
        no_exception(page)
        go(page, "Batching")
        picker = page.locator('[data-testid="stSelectbox"]', has_text="Model").first
        picker.click()
        page.get_by_role("option", name="tiny-elsewhere").click()
        expect(page.get_by_text(re.compile("is served by batchlab at"))).to_be_visible(
            timeout=20_000)
        # (clicked until its traffic line shows: a click landing in a live fragment's rerun
        # is dropped, and "no traffic reached the remote server" once under a busy machine)
        click_until(page, page.get_by_role("button", name="Start traffic"),
                    page.get_by_text(re.compile(r"Running: [\d,.]+ req/s")).first)
        expect(page.get_by_text(re.compile(r"Remote: each request goes to"))).to_be_visible(
            timeout=20_000)
        deadline = time.monotonic() + 60
        while back.metrics("tiny").success_count < 50:     # it reached the other server
            assert time.monotonic() < deadline, "no traffic reached the remote server"
            time.sleep(0.2)
        shot(page, "remote")
        page.get_by_role("button", name="Stop traffic").click()
        wait_ready(page)
        no_exception(page)
    finally:
        other.close()
        back.close()


def test_the_dashboard_survives_its_engine_dying(server, page: Page):
    """SIGKILL to the dashboard's engine server: the dashboard reaps it and starts it again
    by itself, and the open page, without a reload, says how it ended and what came back
    from its state folder (the demo models, with their settings)."""
    import signal
    open_app(page, server)
    wait_ready(page)
    pid = _engine_server_pid(server)
    os.kill(pid, signal.SIGKILL)
    banner = page.locator('[data-testid="stAlert"]', has_text="was killed by SIGKILL")
    expect(banner).to_be_visible(timeout=90_000)  # no reload: the page noticed
    expect(banner).to_contain_text("It came back with")
    expect(banner).to_contain_text("mlp")
    expect(page.get_by_role("heading", name="Models", level=1)).to_be_visible()
    new_pid = _engine_server_pid(server)
    assert new_pid != pid
    # the dead child was reaped: no zombie left behind
    status = Path(f"/proc/{pid}/status")
    assert not status.exists() or "zombie" not in status.read_text()
    expect(page.locator('[data-testid="stSidebar"] [data-testid="stMetric"]',
                        has_text="Models")).to_be_visible(timeout=20_000)
    no_exception(page)
    # the notice stays through whole-page runs until dismissed (traffic the restart
    # stopped redrew the page and took it away, unread, within a second; a newcomer)
    go(page, "Batching")
    expect(banner).to_be_visible()
    page.get_by_role("button", name="Dismiss this notice").click()
    expect(banner).to_have_count(0, timeout=20_000)
    go(page, "Models")
    expect(banner).to_have_count(0)
    no_exception(page)


def test_a_page_under_another_name_gets_no_session_with_the_dashboard(tmp_path):
    """DNS rebinding: a page on ``rebind.attacker.test``, its name then pointed at 127.0.0.1,
    opened the dashboard as its own origin and clicked "Unload" (an adversary). The
    dashboard's session (its websocket) is refused to any Host but this machine's names."""
    import base64
    import http.client
    url, proc, log = _start_dashboard(tmp_path, log_name="streamlit-rebind.log")
    port = int(url.rsplit(":", 1)[1])

    def handshake(host: str) -> int:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            conn.putrequest("GET", "/_stcore/stream", skip_host=True)
            for k, v in {"Host": f"{host}:{port}", "Origin": f"http://{host}:{port}",
                         "Upgrade": "websocket", "Connection": "Upgrade",
                         "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
                         "Sec-WebSocket-Version": "13",
                         "Sec-WebSocket-Protocol": "streamlit"}.items():
                conn.putheader(k, v)
            conn.endheaders()
            return conn.getresponse().status
        finally:
            conn.close()
    try:
        assert handshake("rebind.attacker.test") == 403
        assert handshake("127.0.0.2") == 403            # (another loopback address's name)
        assert [handshake(h) for h in ("127.0.0.1", "localhost", "[::1]")] == [101] * 3
    finally:
        _stop_dashboard(proc, log)


def _uploads_held(url: str) -> int:
    """Bytes the dashboard's upload store holds now (Streamlit's own metrics endpoint)."""
    with urllib.request.urlopen(f"{url}/_stcore/metrics", timeout=30) as r:
        text = r.read().decode()
    return sum(int(float(line.rsplit(" ", 1)[1])) for line in text.splitlines()
               if line.startswith("cache_memory_bytes") and "UploadedFileManager" in line)


def test_the_upload_endpoint_holds_a_bounded_total(page: Page, tmp_path):
    """Streamlit caps each uploaded file, not their sum: a program holding a session PUT
    files under new ids and the dashboard kept them all in memory (the session's files are
    let go only when it ends). With the per-file limit at 1 MB, a session holds at most
    2 MB: older files are let go, the newest kept."""
    url, proc, log = _start_dashboard(tmp_path, log_name="streamlit-uploads.log",
                                      STREAMLIT_SERVER_MAX_UPLOAD_SIZE="1")
    try:
        put: list = []
        page.on("request", lambda r: put.append(r) if r.method == "PUT"
                and "/_stcore/upload_file/" in r.url else None)
        open_app(page, url)
        model = tmp_path / "tiny.onnx"
        model.write_bytes(build_demo_model("tiny"))
        upload_model_file(page, model)
        assert put, "the browser's upload was not seen"
        base, token = put[-1].url.rsplit("/", 1)[0], put[-1].headers["x-xsrftoken"]
        blob = os.urandom(900_000)
        for k in range(8):   # 7.2 MB under new ids, as a script would
            r = page.request.put(f"{base}/flood-{k}", headers={"X-Xsrftoken": token},
                                 multipart={"file": {"name": f"f{k}.bin", "buffer": blob,
                                                     "mimeType": "application/octet-stream"}})
            assert r.status == 204, (r.status, r.text())
        # (Streamlit's metric of it is computed at most every 5 s: read until it has them)
        deadline = time.monotonic() + 60
        while (held := _uploads_held(url)) < 2 * len(blob) and time.monotonic() < deadline:
            page.wait_for_timeout(500)
        assert 2 * len(blob) <= held <= 2 * 2**20   # the newest two kept, the rest let go
        go(page, "Batching")    # the next run of this tab's script says so, once
        expect(page.get_by_text(re.compile(r"^7 file\(s\) uploaded in this tab were let go: "
                                           r"the dashboard keeps at most 2 MiB"))
               ).to_be_visible(timeout=20_000)
        go(page, "Models")
        expect(page.get_by_text(re.compile("uploaded in this tab were let go"))).to_have_count(0)
    finally:
        _stop_dashboard(proc, log)


def test_a_dashboard_beyond_loopback_refuses_a_stranger(page: Page, tmp_path):
    """Listening on every interface, the dashboard shows a stranger a password form and
    nothing else: no pages, no upload, no engine started; the password opens it."""
    url, proc, log = _start_dashboard(tmp_path, address="0.0.0.0", log_name="streamlit-0.log",
                                      BATCHLAB_PASSWORD="correct horse battery",
                                      BATCHLAB_ENGINE_URL="inprocess")
    try:
        page.goto(url)
        expect(page.get_by_text("asks for its password")).to_be_visible(timeout=60_000)
        wait_ready(page)
        expect(page.locator('[data-testid="stPageLink"]')).to_have_count(0)
        expect(page.locator('[data-testid="stFileUploader"]')).to_have_count(0)
        box = page.get_by_label("Password", exact=True)
        box.fill("guess")
        page.get_by_role("button", name="Open the dashboard").click()
        expect(page.get_by_text("That is not the password")).to_be_visible(timeout=20_000)
        expect(page.locator('[data-testid="stPageLink"]')).to_have_count(0)
        page.goto(url + "/monitor")  # a deep link is no way round it
        expect(page.get_by_text("asks for its password")).to_be_visible(timeout=20_000)
        expect(page.get_by_role("heading", name="Monitor", level=1)).to_have_count(0)
        box = page.get_by_label("Password", exact=True)
        box.fill("correct horse battery")
        page.get_by_role("button", name="Open the dashboard").click()
        expect(page.get_by_role("heading", name="Monitor", level=1)).to_be_visible(
            timeout=60_000)
        expect(page.locator('[data-testid="stSidebar"] [data-testid="stPageLink"]').first
               ).to_be_visible()
        no_exception(page)
    finally:
        _stop_dashboard(proc, log)
