"""A Gradio demo of the self-backtracking search: enter a problem (or pick a test problem), choose N, b and the
selection rule, run the search on CPU, and see its tree (:mod:`backtrack_trl.viz.search_view`), the candidates with their
scores and both checkers' verdicts, and the chosen answer. Needs the ``demo`` extra (``pip install -e ".[demo]"``);
runs offline (set ``GRADIO_ANALYTICS_ENABLED=False``, as ``make demo`` does).

Usage:

```python
from backtrack_trl.viz.demo import build_demo

demo = build_demo("results/countdown-tiny/models/backtrack-sft", data="data/countdown-tiny/backtrack")
demo.launch()  # http://127.0.0.1:7860; API: gradio_client.Client(url).predict(..., api_name="/search")
```

``recipes/demo.py`` (``make demo MODEL=<folder>``) is the command-line front end; ``space/`` holds the files of a
Hugging Face Space that runs it.

Every field of a search request is checked by :func:`read_request` (a pure function, tested without a browser):
a bad value becomes a ``gr.Error`` naming the field and what it accepts, never a traceback or a silent rounding
(the search event skips Gradio's preprocessing, so ``2.5`` is refused rather than rounded to 2).
"""

from __future__ import annotations

import html
import math
import os
import re
from dataclasses import dataclass, field

from backtrack_trl.decoding.selection import SELECTION_RULES
from backtrack_trl.viz.render_html import render_svg
from backtrack_trl.viz.search_view import build_view, candidates_headers, candidates_rows, summary


os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

DEFAULT_PROBLEM = ((3, 5, 2), 16)
TEST_SPLITS = ("test_seen", "test_new")
# What each field accepts (the sliders' ranges; the others bound what a Countdown prompt and a seed can hold).
N_RANGE, B_RANGE = (1, 64), (0, 3)
SEED_RANGE = (0, 2**32 - 1)
NUMBER_RANGE = (0, 10**9 - 1)
COUNT_RANGE = (2, 8)


@dataclass
class DemoArguments:
    """Arguments of ``recipes/demo.py``."""

    model: str = field(
        default="results/countdown-tiny/models/backtrack-sft", metadata={"help": "Model folder (a backtrack model)."}
    )
    data: str | None = field(
        default="data/countdown-tiny/backtrack",
        metadata={"help": "Dataset folder whose test problems the app offers (skipped when absent)."},
    )
    test_problems: int = field(default=50, metadata={"help": "Test problems offered per split."})
    numbers: list[int] = field(default_factory=lambda: list(DEFAULT_PROBLEM[0]), metadata={"help": "First problem."})
    target: int = field(default=DEFAULT_PROBLEM[1], metadata={"help": "Its target."})
    n: int = field(default=8, metadata={"help": "Initial N."})
    b: int = field(default=1, metadata={"help": "Initial b."})
    seed: int = field(default=0, metadata={"help": "Initial seed."})
    host: str = field(default="127.0.0.1", metadata={"help": "Address to serve on (0.0.0.0 in a Space)."})
    port: int = field(default=7860, metadata={"help": "Port."})

    def __post_init__(self):
        # The first problem and settings go through the same checks as the form, under their option names.
        self.numbers = [whole_number("--numbers", value, *NUMBER_RANGE) for value in self.numbers]
        if not COUNT_RANGE[0] <= len(self.numbers) <= COUNT_RANGE[1]:
            raise ValueError(f"--numbers has {len(self.numbers)} numbers; give {COUNT_RANGE[0]}..{COUNT_RANGE[1]}.")
        self.target = whole_number("--target", self.target, *NUMBER_RANGE)
        self.n, self.b = whole_number("--n", self.n, *N_RANGE), whole_number("--b", self.b, *B_RANGE)
        self.seed = whole_number("--seed", self.seed, *SEED_RANGE)
        self.test_problems = whole_number("--test_problems", self.test_problems, 0, 10_000)
        self.port = whole_number("--port", self.port, 1, 65535)


def whole_number(name: str, value, low: int, high: int) -> int:
    """``value`` (an int, a float or the text of a form field) as an int in ``low..high``; a ValueError naming
    ``name``, the value and the accepted range otherwise (empty, ``inf``, ``nan``, ``2.5``, out of range)."""
    accepted = f"enter a whole number in {low}..{high}"
    if value is None or (isinstance(value, str) and not value.strip()):
        raise ValueError(f"{name} is empty; {accepted}.")
    number = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and re.fullmatch(r"[+-]?[0-9]+", value.strip()):
        if len(value.strip()) > 30:  # far out of any range, and int() fails past 4,300 digits
            raise ValueError(f"{name}={_shown(value)} is outside {low}..{high}; {accepted}.")
        number = int(value)
    elif isinstance(value, (float, str)):
        try:
            real = float(value)
        except ValueError:
            real = math.nan
        if math.isfinite(real) and real.is_integer():
            number = int(real)
    if number is None:
        raise ValueError(f"{name}={_shown(value)} is not a whole number; {accepted}.")
    if not low <= number <= high:
        raise ValueError(f"{name}={_shown(number)} is outside {low}..{high}; {accepted}.")
    return number


def _shown(value) -> str:
    """``repr(value)``, cut short for a pasted wall of digits (and never str() of an int past its digit limit)."""
    if isinstance(value, int) and abs(value) >= 10**30:
        return f"{'-' if value < 0 else ''}<a number of over 30 digits>"
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:30]}...' ({len(text) - 2} characters)"


@dataclass(frozen=True)
class SearchRequest:
    """One checked search request of the form: the prompt and the search settings."""

    prompt: str
    n: int
    b: int
    selection: str
    seed: int


def read_request(task, choices: dict[str, str], numbers, target, test_problem, n, b, selection, seed):
    """Check every field of the form (raw values as Gradio passes them) and build the prompt; a ValueError names the
    field (by its label) and what it accepts. ``choices``: ``{label: prompt}`` of the offered test problems."""
    if test_problem and test_problem not in choices:
        raise ValueError(f"Test problem {test_problem!r} is not one of the {len(choices)} offered; pick one or none.")
    n = whole_number("N (samples per state)", n, *N_RANGE)
    b = whole_number("b (backtracking rounds)", b, *B_RANGE)
    if selection not in SELECTION_RULES:
        raise ValueError(f"Selection rule {selection!r} is not one of {', '.join(SELECTION_RULES)}.")
    seed = whole_number("Seed", seed, *SEED_RANGE)
    if test_problem:
        prompt = choices[test_problem]
        task.parse_prompt(prompt)
    else:
        values = parse_numbers("" if numbers is None else str(numbers))
        row = {"numbers": values, "target": whole_number("Target", target, *NUMBER_RANGE)}
        prompt = task.format_prompt(task.problem_from_row(row))
    return SearchRequest(prompt, n, b, selection, seed)


def test_problem_choices(data: str | None, per_split: int = 50, task=None) -> dict[str, str]:
    """``{label: prompt}`` of the first ``per_split`` problems of each test split of ``data`` ({} when absent)."""
    from pathlib import Path

    if not data or not Path(data).exists():
        return {}
    import datasets

    from backtrack_trl.tasks import get_task

    task = get_task(task or "countdown")
    dataset = datasets.load_dataset(data)
    choices = {}
    for split in TEST_SPLITS:
        if split in dataset:
            rows = dataset[split].select(range(min(per_split, len(dataset[split]))))
            for i, prompt in enumerate(rows["prompt"]):
                question = prompt.split("\n")[0].removeprefix("###Question:").strip()
                choices[f"{split} #{i}: {question}"] = prompt
    return choices


def parse_numbers(text: str) -> list[int]:
    """``"3 5 2"`` / ``"3, 5, 2"`` / ``"[3, 5, 2]"`` -> [3, 5, 2]; a ValueError naming the bad item."""
    items = text.replace("[", " ").replace("]", " ").replace(",", " ").split()
    low, high = COUNT_RANGE
    if not items:
        raise ValueError(f"Numbers is empty; enter {low}..{high} whole numbers, e.g. 3 5 2.")
    numbers = []
    for item in items:
        # ASCII digits only: str.isdigit() also takes "²", which int() refuses.
        if not re.fullmatch(r"[0-9]+", item):
            raise ValueError(
                f"Numbers: {item!r} is not a whole number; enter {low}..{high} whole numbers (0 or more) separated by "
                "spaces or commas, e.g. 3 5 2."
            )
        numbers.append(whole_number("Numbers", item, *NUMBER_RANGE))
    if not low <= len(numbers) <= high:
        raise ValueError(f"Numbers has {len(numbers)} numbers; enter {low}..{high}, e.g. 3 5 2.")
    return numbers


def tree_fragment(view) -> str:
    """The tree (inline SVG) and the expanded states, as an HTML fragment for ``gr.HTML``."""
    esc = html.escape
    rows = "".join(
        f"<tr><td>S{s['id']}</td><td>{'-' if s['parent'] is None else 'S' + str(s['parent'])}</td><td>{s['round']}</td>"
        f"<td><pre style='margin:0'>{esc(s['prefix'] or '(the prompt)')}</pre></td>"
        f"<td><pre style='margin:0'>{esc(''.join(s.get('wrong_steps', [])) or '-')}</pre></td></tr>"
        for s in view.states
    )
    return (
        '<div class="search-tree-view" style="overflow:auto;max-height:70vh;border:1px solid #cfd8dc;'
        f'background:#fff">{render_svg(view)}</div>'
        "<p style='font-size:13px'>Nodes are steps; a path from the root is a sample. S&lt;id&gt;: an expanded state. "
        "Dashed red arcs: rollbacks from a <code>&lt;backtrack&gt;</code> to the state it returned to.</p>"
        "<table style='font-size:13px'><tr><th>State</th><th>Parent</th><th>Expanded in round</th><th>Prefix</th>"
        f"<th>Wrong steps that led there</th></tr>{rows}</table>"
    )


def answer_markdown(view) -> str:
    info = summary(view)
    verdicts = " · ".join(
        f"**{mode} checker**: {'✓ correct' if v['correct'] else '✗ ' + v['reason'].replace('_', ' ')}"
        for mode, v in info["verdicts"].items()
    )
    answer = info["answer"] or "(no answer)"
    return (
        f"### Chosen answer\n\n```text\n{answer}\n```\n\n{verdicts}\n\n"
        f"{info['samples']} samples from {info['states']} expanded state(s), {info['rollbacks']} rollback(s), "
        f"{info['tokens']} tokens sampled, {1000 * view.result.wall_time:.0f} ms."
    )


class SearchRunner:
    """Holds the model; :meth:`run` searches one problem and returns (tree HTML, candidate rows, answer markdown)."""

    def __init__(self, model, tokenizer, task="countdown"):
        from backtrack_trl.tasks import get_task

        self.model, self.tokenizer, self.task = model, tokenizer, get_task(task)

    def prompt(self, numbers: str, target, prompt: str | None = None) -> str:
        if prompt and prompt.strip():
            text = prompt if prompt.endswith("\n") else prompt + "\n"
            self.task.parse_prompt(text)
            return text
        return read_request(self.task, {}, numbers, target, "", N_RANGE[0], B_RANGE[0], "likelihood", 0).prompt

    def run(self, prompt: str, n: int = 8, b: int = 1, selection: str = "likelihood", seed: int = 0):
        from backtrack_trl.decoding import SelfBacktrackingDecoder

        decoder = SelfBacktrackingDecoder(
            self.model, self.tokenizer, n=n, b=b, selection=selection, seed=seed, task=self.task
        )
        result = decoder.solve([prompt])[0]
        view = build_view(result, self.task)
        return tree_fragment(view), candidates_rows(view), answer_markdown(view)


def build_demo(
    model=None,
    data: str | None = None,
    tokenizer=None,
    task="countdown",
    test_problems: int = 50,
    problem: tuple = DEFAULT_PROBLEM,
    n: int = 8,
    b: int = 1,
    seed: int = 0,
):
    """The Gradio Blocks app. ``model``: a model folder, or a model object with ``tokenizer``. The page opens with
    ``problem`` (numbers, target) searched with ``n`` and ``b``."""
    import gradio as gr

    from backtrack_trl.decoding import load_model_and_tokenizer

    if isinstance(model, (str, os.PathLike)):
        model, tokenizer = load_model_and_tokenizer(str(model), device="cpu")
    if model is None or tokenizer is None:
        raise ValueError("build_demo needs a model folder, or a model and its tokenizer.")
    runner = SearchRunner(model, tokenizer, task)
    choices = test_problem_choices(data, test_problems, task)
    numbers0, target0 = problem
    headers = candidates_headers(runner.task.name)

    def search(numbers, target, test_problem, n, b, selection, seed):
        try:
            request = read_request(runner.task, choices, numbers, target, test_problem, n, b, selection, seed)
            return runner.run(request.prompt, request.n, request.b, request.selection, request.seed)
        except ValueError as error:
            raise gr.Error(str(error)) from None

    def pick(test_problem):
        # A Countdown test problem fills the numbers and the target (then the search reads those, so they can be
        # edited); a problem of another task stays selected and is searched as it is.
        if not test_problem or test_problem not in choices:
            return gr.update(), gr.update(), gr.update()
        row = runner.task.problem_to_row(runner.task.parse_prompt(choices[test_problem]))
        if set(row) != {"numbers", "target"}:
            return gr.update(), gr.update(), gr.update()
        return " ".join(map(str, row["numbers"])), row["target"], ""

    # The page opens with the default problem already searched (its outputs are the components' initial values), so
    # a first visit shows a tree without a round trip.
    initial = runner.run(runner.prompt(" ".join(map(str, numbers0)), target0), n, b, "likelihood", seed)

    with gr.Blocks(title="Self-backtracking search") as demo:
        gr.Markdown(
            "# Self-backtracking search, seen as a tree\n"
            "A model trained to emit `<backtrack>` after a wrong step; the search samples N continuations of every "
            "state, rolls back one step at each `<backtrack>` and re-expands up to floor(sqrt N) rolled-back states "
            "for b rounds, then picks an answer ([paper](https://arxiv.org/abs/2502.04404)). Runs on CPU."
        )
        with gr.Row():
            numbers = gr.Textbox(value=" ".join(map(str, numbers0)), label="Numbers", scale=2)
            target = gr.Number(value=target0, label="Target", precision=0, scale=1)
            test_problem = gr.Dropdown(
                choices=[""] + list(choices), value="", label="...or a test problem", scale=3, allow_custom_value=False
            )
        with gr.Row():
            n_slider = gr.Slider(*N_RANGE, value=n, step=1, label="N (samples per state)")
            b_slider = gr.Slider(*B_RANGE, value=b, step=1, label="b (backtracking rounds)")
            selection = gr.Radio(list(SELECTION_RULES), value="likelihood", label="Selection rule")
            seed_box = gr.Number(value=seed, precision=0, label="Seed")
        button = gr.Button("Search", variant="primary")
        with gr.Row():
            with gr.Column(scale=3):
                tree = gr.HTML(value=initial[0], label="Search tree")
            with gr.Column(scale=1):
                answer = gr.Markdown(value=initial[2])
        table = gr.Dataframe(value=initial[1], headers=headers, label="Candidates", wrap=True)
        inputs = [numbers, target, test_problem, n_slider, b_slider, selection, seed_box]
        outputs = [tree, table, answer]
        # preprocess=False: the raw values reach read_request, which checks every field. Gradio's own preprocessing
        # rounds a Number of precision 0 (2.5 -> 2) and fails outside gr.Error on inf or an empty Slider.
        button.click(search, inputs, outputs, api_name="search", preprocess=False)
        test_problem.change(pick, [test_problem], [numbers, target, test_problem], api_name=False)
    return demo


def serve(args: DemoArguments) -> None:
    """Load the model and serve the app (``recipes/demo.py``)."""
    demo = build_demo(
        args.model,
        args.data,
        test_problems=args.test_problems,
        problem=(args.numbers, args.target),
        n=args.n,
        b=args.b,
        seed=args.seed,
    )
    demo.launch(server_name=args.host, server_port=args.port)
