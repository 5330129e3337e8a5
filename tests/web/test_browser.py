"""The web app in a real browser: ``open-magvit2 serve`` in a subprocess on a free loopback port, driven by headless
Chromium through Playwright.

Runs when Playwright (the dev extra) and a Chromium are installed, and skips saying which is missing otherwise.
Playwright cannot download its own browser here, so it drives the system's: Debian's ``chromium`` package
(``apt-get install -y chromium``), or any Chromium/Chrome binary named by ``OPEN_MAGVIT2_CHROMIUM``. The server
serves the bundled demo models when this installation has them (what ``serve`` does by default), else the tiny
stand-ins of ``conftest.py``; the video generator is always the stand-in (``--video-generator PATH``), so its tab
is tested whatever this installation bundles. Screenshots go to the test's temporary folder (and to
``OPEN_MAGVIT2_SCREENSHOTS`` when set); the server and the browser are stopped when the module ends.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

# A closed network: no background requests (each one is refused, or waits), no GPU, no sandbox as root.
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
START_TIMEOUT_S = 90  # a failing start is reported long before; `serve` starts in a few seconds
STEP_TIMEOUT_MS = 60_000


def chromium_path() -> str | None:
    for candidate in (os.environ.get("OPEN_MAGVIT2_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if candidate and (path := shutil.which(candidate)):
            return path
    return None


def demo_models_installed() -> bool:
    from open_magvit2.checkpoints.hub import MODEL_TYPES, demo_model_dir

    try:
        return all(demo_model_dir(t) for t in MODEL_TYPES)
    except FileNotFoundError:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed (pip install playwright)")
    pytest.importorskip("gradio", reason="the web extra is not installed (pip install open-magvit2[web])")
    exe = chromium_path()
    if exe is None:
        pytest.skip("no Chromium found: install Debian's (apt-get install -y chromium) or set OPEN_MAGVIT2_CHROMIUM")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=CHROMIUM_FLAGS, headless=True)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def server(browser, tmp_path_factory, standin_models):
    """``open-magvit2 serve`` on a free port; the time from the command to the first served page is measured."""
    demo = demo_models_installed()
    m = standin_models
    models = [] if demo else ["--tokenizer", str(m.tokenizer), "--video-tokenizer", str(m.video),
                              "--generator", str(m.generator)]
    models += ["--video-generator", str(m.video_generator)]
    tmp = tmp_path_factory.mktemp("serve")
    port = free_port()
    env = {**os.environ, "GRADIO_TEMP_DIR": str(tmp / "gradio"), "OMP_NUM_THREADS": "1"}
    log = open(tmp / "serve.log", "w+")  # noqa: SIM115 — read back at the end
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "open_magvit2", "serve", *models, "--port", str(port),
                             "--device", "cpu"], stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}/"
    try:
        while True:
            if proc.poll() is not None:
                log.seek(0)
                pytest.fail(f"serve exited with status {proc.returncode}:\n{log.read()}")
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.perf_counter() - t0 > START_TIMEOUT_S:
                pytest.fail(f"serve did not answer within {START_TIMEOUT_S} s")
            time.sleep(0.2)
        started = time.perf_counter() - t0
        print(f"\nserve ({'demo models' if demo else 'stand-in models'}) answered after {started:.1f} s")
        yield SimpleNamespace(url=url, startup_s=started, demo=demo, log=tmp / "serve.log", proc=proc)
    finally:
        proc.send_signal(signal.SIGTERM)  # serve stops like Ctrl-C and removes its files
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture(scope="module")
def screens(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("screenshots")


@pytest.fixture(scope="module")
def page(browser, server):
    p = browser.new_page(viewport={"width": 1400, "height": 950})
    p.set_default_timeout(STEP_TIMEOUT_MS)
    p.goto(server.url)
    p.wait_for_selector("#header")
    yield p
    p.close()


def shot(page, screens: Path, name: str) -> Path:
    page.wait_for_timeout(600)  # let Gradio's fade-in of fresh outputs finish
    path = screens / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    if out := os.environ.get("OPEN_MAGVIT2_SCREENSHOTS"):
        Path(out).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(out) / path.name)
    return path


def fetch_image(page, selector: str) -> np.ndarray:
    """The picture an ``<img>`` shows, fetched from the server as the browser did."""
    src = page.locator(f"{selector} img").first.get_attribute("src")
    body = page.request.get(src).body()
    return np.asarray(Image.open(io.BytesIO(body)).convert("RGB"))


def upload(page, selector: str, path: Path) -> None:
    """Put ``path`` into a Gradio file component, clearing the file it holds first (its input is gone then)."""
    box = page.locator(selector)
    # wait until the component has rendered one or the other (under load it may still be empty when asked)
    box.locator("input[type=file], button[aria-label='Clear']").first.wait_for(state="attached")
    file_input = box.locator("input[type=file]")
    if not file_input.count():
        box.locator("button[aria-label='Clear']").click()
    file_input.set_input_files(str(path))


def wait_text(page, selector: str, pattern: str) -> str:
    """Wait until the element's text matches ``pattern`` (a regex); return the text."""
    page.wait_for_function(
        "([sel, pat]) => { const e = document.querySelector(sel); return e && new RegExp(pat).test(e.innerText); }",
        arg=[selector, pattern],
    )
    return page.locator(selector).inner_text()


def test_serve_listens_on_loopback(server):
    line = f"running on {server.url.rstrip('/')}"  # printed once launch() returns, just after the first answer
    for _ in range(50):
        if line in server.log.read_text():
            break
        time.sleep(0.1)
    assert line in server.log.read_text()
    assert server.proc.poll() is None


def test_tokenizer_tab_reconstructs_an_uploaded_photo(page, inputs, screens):
    upload(page, "#tok-input", inputs.photo)
    text = wait_text(page, "#tok-stats", r"PSNR \d+\.\d\d dB")
    assert re.search(r"SSIM -?\d\.\d\d · 128×128 pixels → 16×16 tokens · \d+ distinct codes", text), text
    assert float(re.search(r"PSNR (\d+\.\d\d) dB", text).group(1)) > 0
    rec = fetch_image(page, "#tok-recon")
    assert rec.shape == (128, 128, 3) and rec.std() > 2  # not blank
    original = fetch_image(page, "#tok-original")
    assert original.shape == rec.shape and not np.array_equal(original, rec)
    assert fetch_image(page, "#tok-tokens").shape == (128, 128, 3)
    shot(page, screens, "1_tokenizer")


def test_bad_uploads_show_readable_errors_and_the_server_keeps_serving(page, inputs, screens):
    from skimage import data

    from open_magvit2.web.tasks import MAX_UPLOAD_MB

    big = inputs.d / "big.png"
    big.write_bytes(os.urandom((MAX_UPLOAD_MB + 5) * 2**20))
    upload(page, "#tok-input", big)
    error = page.locator("[data-testid='toast-text']")
    error.wait_for()
    assert f"exceed the maximum allowed size of {MAX_UPLOAD_MB}" in error.inner_text(), error.inner_text()
    page.locator("[data-testid='toast-close']").click()  # errors stay until closed
    error.wait_for(state="detached")
    upload(page, "#tok-input", inputs.text_png)
    error.wait_for()
    assert re.fullmatch(r"not_an_image\.png: cannot read the image \(.*\); is it a complete image file\?",
                        error.inner_text().strip()), error.inner_text()
    shot(page, screens, "2_bad_upload")
    page.locator("[data-testid='toast-close']").click()  # errors stay until closed
    photo = inputs.d / "astronaut.png"
    Image.fromarray(data.astronaut()).save(photo)
    upload(page, "#tok-input", photo)
    wait_text(page, "#tok-stats", r"PSNR \d+\.\d\d dB.* 128×128 pixels")
    page.get_by_label("original resolution").check()  # the mode change runs it again, at 512×512
    wait_text(page, "#tok-stats", r"PSNR \d+\.\d\d dB.* 512×512 pixels → 64×64 tokens")
    assert page.locator("[data-testid='toast-text']").count() == 0  # no new error
    assert fetch_image(page, "#tok-recon").shape == (512, 512, 3)


def test_generator_tab_samples_a_class(page, screens):
    page.get_by_role("tab", name="Generator", exact=True).click()
    page.locator("#gen-class input").click()
    page.get_by_role("option").nth(3).click()
    count = page.locator("#gen-count input[type=number]")
    count.fill("4")
    count.press("Enter")
    page.locator("#gen-run").click()
    wait_text(page, "#gen-info", r"^4 samples of class 3 at \d+×\d+ pixels")
    grid = fetch_image(page, "#gen-output")
    assert grid.std() > 2 and grid.shape[1] > grid.shape[0]  # one row of 4
    shot(page, screens, "3_generator")


def test_video_tab_reconstructs_an_uploaded_clip(page, inputs, screens):
    page.get_by_role("tab", name="Video", exact=True).click()
    upload(page, "#vid-input", inputs.clip)
    text = wait_text(page, "#vid-stats", r"PSNR \d+\.\d\d dB")
    assert "9 frames of 80×64" in text, text
    src = page.locator("#vid-output video").first.get_attribute("src")
    assert src and page.request.get(src).body()[4:8] == b"ftyp"  # an mp4 the browser can fetch
    shot(page, screens, "4_video")


def test_video_generator_tab_generates_a_playable_clip(page, inputs, screens):
    page.get_by_role("tab", name="Video generator").click()
    page.locator("#vgen-class input").click()
    page.get_by_role("option", name="class 3", exact=True).click()  # the stand-in has no classes.json: numbered classes
    page.locator("#vgen-run").click()
    wait_text(page, "#vgen-info", r"^class 3: 5 frames of 8×8 pixels \(shown 16× larger\) at 8 fps, from the class "
                                  r"alone, CFG 1\.5/2\.5, temperature 1/0\.9, seed 0")
    src = page.locator("#vgen-output video").first.get_attribute("src")
    assert src and page.request.get(src).body()[4:8] == b"ftyp"  # an mp4 the browser can fetch
    # and play: the browser decodes it (no media error), knows its size and its length, 5 frames at 8 fps
    page.wait_for_function("() => { const v = document.querySelector('#vgen-output video'); "
                           "return v && v.readyState >= 2; }")
    state = page.evaluate("() => { const v = document.querySelector('#vgen-output video'); "
                          "return [v.error, v.videoWidth, v.videoHeight, v.duration]; }")
    assert state[:3] == [None, 128, 128] and state[3] == pytest.approx(5 / 8, abs=0.05), state
    shot(page, screens, "5_video_generator")
    upload(page, "#vgen-first", inputs.photo)  # any size: resized and centre-cropped to the frames
    page.locator("#vgen-run").click()
    wait_text(page, "#vgen-info", r"^class 3: .* continuing the uploaded first frame")
    assert page.locator("#vgen-output video").first.get_attribute("src") != src
    assert page.locator("[data-testid='toast-text']").count() == 0  # no error
