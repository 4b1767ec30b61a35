"""The Gradio demo: the search runner (fast), one request through gradio_client and a headless Chromium screenshot
of the page (slow), with the scripted model of the visualize tests, so the tree's outcomes are known."""

import os
import re
import shutil
import socket
import subprocess
import tempfile

import pytest
from _decoding_utils import PLANTED, RIGHT, scripted, tokenizer

from backtrack_trl.tasks import get_task
from backtrack_trl.viz.demo import DemoArguments, SearchRequest, SearchRunner, parse_numbers, read_request
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
    with pytest.raises(ValueError, match="Numbers: 'x' is not a whole number"):
        parse_numbers("3 x 2")
    with pytest.raises(ValueError, match="Target is empty"):
        runner.prompt("3 5 2", "")


PROMPT = "###Question: numbers [3, 5, 2]->target 16\n###Response:\n"
CHOICES = {"test_seen #0: numbers [3, 5, 2]->target 16": PROMPT}
GOOD = {"numbers": "3 5 2", "target": 16, "test_problem": "", "n": 8, "b": 1, "selection": "likelihood", "seed": 0}


def _read(**changes):
    return read_request(get_task("countdown"), CHOICES, **{**GOOD, **changes})


def test_a_good_request_is_read_whole_numbers_as_floats_included():
    assert _read() == SearchRequest(PROMPT, 8, 1, "likelihood", 0)
    # Gradio's Number and Slider pass floats (16.0) and the API may pass text: whole values are fine.
    assert _read(target=16.0, n=8.0, b="1", seed="7", numbers="[3, 5, 2]") == SearchRequest(
        PROMPT, 8, 1, "likelihood", 7
    )
    assert _read(numbers="", target=None, test_problem=next(iter(CHOICES))).prompt == PROMPT


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"target": float("inf")}, r"Target=inf is not a whole number; enter a whole number in 0\.\.999999999"),
        ({"target": float("nan")}, r"Target=nan is not a whole number"),
        ({"target": "inf"}, r"Target='inf' is not a whole number"),
        ({"target": 16.5}, r"Target=16.5 is not a whole number"),
        ({"target": -1}, r"Target=-1 is outside 0\.\.999999999"),
        ({"target": None}, r"Target is empty; enter a whole number"),
        ({"target": 10**5000}, r"Target=<a number of over 30 digits> is outside 0\.\.999999999"),
        ({"seed": None}, r"Seed is empty; enter a whole number in 0\.\.4294967295"),
        ({"seed": ""}, r"Seed is empty"),
        ({"seed": 1.5}, r"Seed=1.5 is not a whole number"),
        ({"seed": -3}, r"Seed=-3 is outside 0\.\.4294967295"),
        ({"n": 2.5}, r"N \(samples per state\)=2.5 is not a whole number; enter a whole number in 1\.\.64"),
        ({"n": 0}, r"N \(samples per state\)=0 is outside 1\.\.64"),
        ({"n": None}, r"N \(samples per state\) is empty"),
        ({"b": 0.5}, r"b \(backtracking rounds\)=0.5 is not a whole number; enter a whole number in 0\.\.3"),
        ({"b": 4}, r"b \(backtracking rounds\)=4 is outside 0\.\.3"),
        ({"b": True}, r"b \(backtracking rounds\)=True is not a whole number"),
        ({"selection": "best"}, r"Selection rule 'best' is not one of likelihood"),
        ({"selection": None}, r"Selection rule None is not one of"),
        ({"test_problem": "test_new #9: ?"}, r"Test problem 'test_new #9: \?' is not one of the 1 offered"),
        ({"numbers": ""}, r"Numbers is empty; enter 2\.\.8 whole numbers"),
        ({"numbers": None}, r"Numbers is empty"),
        ({"numbers": "3 ² 2"}, r"Numbers: '²' is not a whole number"),  # isdigit() is True for "²"
        ({"numbers": "3 -5 2"}, r"Numbers: '-5' is not a whole number"),
        ({"numbers": "3 5.5 2"}, r"Numbers: '5.5' is not a whole number"),
        ({"numbers": "7"}, r"Numbers has 1 numbers; enter 2\.\.8"),
        ({"numbers": "1 " * 9}, r"Numbers has 9 numbers"),
        ({"numbers": "3 " + "9" * 5000}, r"Numbers='9{29}\.\.\.' \(5000 characters\) is outside 0\.\.999999999"),
    ],
)
def test_every_bad_field_is_refused_with_its_name_and_what_it_accepts(changes, message):
    """Issue 24: target inf, an empty seed and fractional N/b escaped gr.Error (a raw exception or a silent
    truncation); the app turns these ValueErrors into gr.Error."""
    with pytest.raises(ValueError, match=message):
        _read(**changes)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"n": 0}, "--n=0 is outside 1..64"),
        ({"b": 9}, "--b=9 is outside 0..3"),
        ({"seed": -1}, "--seed=-1 is outside 0..4294967295"),
        ({"target": -16}, "--target=-16 is outside 0..999999999"),
        ({"numbers": [3]}, "--numbers has 1 numbers; give 2..8"),
        ({"numbers": [3, -5]}, "--numbers=-5 is outside"),
        ({"port": 70000}, "--port=70000 is outside 1..65535"),
        ({"test_problems": -1}, "--test_problems=-1 is outside 0..10000"),
    ],
)
def test_demo_options_are_checked_before_the_model_loads(options, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        DemoArguments(**options)
    assert DemoArguments().n == 8


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
    with pytest.raises(Exception, match="Numbers: 'x' is not a whole number"):  # gr.Error reaches the client
        client.predict("5 x 2", 16, "", 16, 1, "likelihood", 0, api_name="/search")
    # The fields Gradio itself rounded (2.5 -> 2) or failed on (inf, None) outside gr.Error reach read_request.
    bad = [
        (("5 3 2", "inf", "", 16, 1, "likelihood", 0), r"Target='inf' is not a whole number"),  # JSON has no inf
        (("5 3 2", 16, "", 16, 1, "likelihood", None), r"Seed is empty"),
        (("5 3 2", 16, "", 2.5, 1, "likelihood", 0), r"N \(samples per state\)=2.5 is not a whole number"),
        (("5 3 2", 16, "", 16, None, "likelihood", 0), r"b \(backtracking rounds\) is empty"),
        (("5 3 2", 16.5, "", 16, 1, "likelihood", 0), r"Target=16.5 is not a whole number"),
    ]
    for fields, message in bad:
        with pytest.raises(Exception, match=message):
            client.predict(*fields, api_name="/search")


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
