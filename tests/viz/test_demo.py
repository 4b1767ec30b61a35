"""The Gradio demo: the search runner (fast), one request through gradio_client and a headless Chromium screenshot
of the page (slow), with the scripted model of the visualize tests, so the tree's outcomes are known."""

import os
import shutil
import socket
import subprocess
import tempfile

import pytest
from _decoding_utils import PLANTED, RIGHT, scripted, tokenizer

from backtrack_trl.viz.demo import SearchRunner, parse_numbers
from backtrack_trl.viz.search_view import OUTCOMES


def _rgb(colour: str) -> tuple[int, int, int]:
    return tuple(int(colour[i : i + 2], 16) for i in (1, 3, 5))


def test_runner_searches_one_problem_and_checks_the_answer():
    runner = SearchRunner(scripted(PLANTED), tokenizer())
    prompt = runner.prompt("5, 3, 2", 16)
    assert prompt == "###Question: numbers [5, 3, 2]->target 16\n###Response:\n"
    tree, rows, answer = runner.run(prompt, n=16, b=1, selection="likelihood", seed=0)
    assert "<svg" in tree and "8*2=16" in tree and OUTCOMES["correct"][0] in tree
    chosen = [row for row in rows if row[1] == "yes"]
    assert len(chosen) == 1 and chosen[0][2] == RIGHT and chosen[0][4:6] == ["correct", "correct"]
    assert "strict checker**: ✓ correct" in answer and "official checker**: ✓ correct" in answer
    with pytest.raises(ValueError, match="positive integers"):
        parse_numbers("3 x 2")
    with pytest.raises(ValueError, match="target"):
        runner.prompt("3 5 2", "")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def app_url():
    pytest.importorskip("gradio")
    from backtrack_trl.viz.demo import build_demo

    demo = build_demo(scripted(PLANTED), tokenizer=tokenizer())
    _, url, _ = demo.launch(prevent_thread_lock=True, server_port=_free_port(), quiet=True)
    yield url
    demo.close()


@pytest.mark.slow
def test_app_answers_a_request_through_gradio_client(app_url):
    from gradio_client import Client

    client = Client(app_url, verbose=False)
    tree, table, answer = client.predict("5 3 2", 16, "", 16, 1, "likelihood", 0, api_name="/search")
    assert "<svg" in tree and "outcome-correct" in tree and "S1  5-3=2" in tree
    chosen = [row for row in table["data"] if row[1] == "yes"]
    assert chosen[0][2] == RIGHT and "✓ correct" in answer
    with pytest.raises(Exception, match="positive integers"):  # gr.Error reaches the client with its message
        client.predict("5 x 2", 16, "", 16, 1, "likelihood", 0, api_name="/search")


@pytest.mark.slow
def test_browser_screenshot_shows_the_tree(app_url):
    """Debian's chromium renders the page (it opens with the default problem searched); the screenshot must show
    the tree: node fills of the outcome colours present."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("no chromium on PATH (Debian: apt-get install chromium; .ci/run installs it)")
    from PIL import Image

    out = os.environ.get("BACKTRACK_TRL_SCREENSHOT") or os.path.join(tempfile.mkdtemp(), "demo.png")
    with tempfile.TemporaryDirectory() as profile:
        command = [
            browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            f"--user-data-dir={profile}", f"--screenshot={out}", "--window-size=1400,1000", "--hide-scrollbars",
            "--virtual-time-budget=20000", app_url.replace("localhost", "127.0.0.1"),
        ]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert os.path.isfile(out), f"chromium wrote no screenshot (exit {done.returncode}): {done.stderr[-2000:]}"
    image = Image.open(out).convert("RGB")
    assert image.size == (1400, 1000)
    counts = {colour: n for n, colour in image.getcolors(maxcolors=1 << 24)}
    # The default problem (3 5 2 -> 16) under the planted policy: rolled-back paths and goal nodes are drawn.
    for outcome in ("backtrack", "correct"):
        assert counts.get(_rgb(OUTCOMES[outcome][0]), 0) > 200, f"no {outcome} nodes in {out}"
