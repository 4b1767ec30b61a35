"""See the search: one problem's self-backtracking search drawn as a tree (a self-contained HTML page and a PNG),
from a model folder and a problem, or from an evaluation's generations file.

The tree merges the samples' lines: the prompt at the root, one node per step text, every sample a path to its end,
coloured by how it ended (green correct, orange wrong, red ``<backtrack>`` with a dashed arc to the state it rolled
back to, grey length limit, purple EOS); expanded states carry a thick border, the chosen answer's path is blue.
:mod:`backtrack_trl.viz.search_view` builds it, :mod:`backtrack_trl.viz.render_html` and
:mod:`backtrack_trl.viz.render_png` draw it; this module writes the files and is the recipe's back end.

Usage:

```python
from backtrack_trl.decoding import SelfBacktrackingDecoder
from backtrack_trl.viz.search_tree import load_generation, write_search_view

decoder = SelfBacktrackingDecoder.from_pretrained("results/countdown-tiny/models/backtrack-sft", n=8, b=1)
result = decoder.solve(["###Question: numbers [3, 5, 2]->target 16\\n###Response:\\n"])[0]
write_search_view(result, "search.html", png="search.png")  # task: read from the prompt

result = load_generation("results/countdown-tiny/eval/backtrack/generations/test_seen/sbt_b1_n32.jsonl", index=3)
write_search_view(result, "problem3.html")
```

``recipes/visualize_search.py`` is the command-line front end; ``recipes/demo.py`` the Gradio app.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from backtrack_trl.atomic_io import atomic_write_text
from backtrack_trl.decoding.results import SearchResult
from backtrack_trl.errors import check_file
from backtrack_trl.tasks import get_task
from backtrack_trl.viz.render_html import render_html
from backtrack_trl.viz.render_png import render_png
from backtrack_trl.viz.search_view import SearchView, as_result, build_view, summary, task_of


def write_search_view(result, html_path: str | Path, png: str | Path | None = None, task=None,
                      title: str | None = None) -> SearchView:  # fmt: skip
    """Write the HTML page (and the PNG when ``png`` is given) of one search, atomically; returns the view."""
    view = build_view(result, task)
    atomic_write_text(html_path, render_html(result, title=title, view=view))
    if png is not None:
        render_png(view, png)
    return view


def load_generation(path: str | Path, index: int) -> SearchResult:
    """Problem ``index`` (its ``index`` column) of an evaluation's generations file (``.jsonl`` or ``.parquet``)."""
    path = check_file(  # one error naming the option for a missing file or a folder
        path, "--generations", "evaluation writes them as <output_dir>/generations/<split>/<decoder>.jsonl "
        "(recipes/evaluate_decoders.py)"
    )  # fmt: skip
    if path.suffix == ".parquet":
        import pandas as pd

        rows = pd.read_parquet(path).to_dict("records")
    else:
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    for position, row in enumerate(rows):
        if row.get("index", position) == index:
            return as_result(row)
    raise ValueError(f"--index {index}: {path} has problems 0..{len(rows) - 1}; pick one of those.")


def pick_examples(path: str | Path) -> dict[str, int]:
    """Indices of a solved and an unsolved problem (strict checker) of a generations file, preferring ones whose
    search rolled back (the more telling trees); missing kinds are left out."""
    path = Path(path)
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    picked: dict[str, int] = {}
    for kind, solved in (("solved", True), ("unsolved", False)):
        matching = [row for row in rows if bool(row.get("correct_strict")) == solved]
        if matching:
            best = max(matching, key=lambda row: (row.get("rollbacks", 0) > 0, -row.get("index", 0)))
            picked[kind] = best.get("index", rows.index(best))
    return picked


@dataclass
class VisualizeArguments:
    """Arguments of ``recipes/visualize_search.py`` (also the YAML keys of ``--config``)."""

    model: str | None = field(default=None, metadata={"help": "Model folder to search with (a backtrack model)."})
    numbers: list[int] | None = field(default=None, metadata={"help": "Countdown numbers, e.g. --numbers 3 5 2."})
    target: int | None = field(default=None, metadata={"help": "Countdown target, e.g. --target 16."})
    prompt: str | None = field(default=None, metadata={"help": "A prompt of any task (instead of numbers/target)."})
    generations: str | None = field(
        default=None, metadata={"help": "Draw a recorded search: an evaluation's generations .jsonl/.parquet file."}
    )
    index: int = field(default=0, metadata={"help": "Problem index in --generations."})
    task: str | None = field(default=None, metadata={"help": "Task name (default: read from the prompt)."})
    n: int = field(default=8, metadata={"help": "Samples per expanded state (N)."})
    b: int = field(default=1, metadata={"help": "Backtracking rounds (b)."})
    selection: str = field(default="likelihood", metadata={"help": "likelihood | backtrack_value | combined | vote."})
    temperature: float = field(default=0.7, metadata={"help": "Sampling temperature."})
    max_new_tokens: int = field(default=64, metadata={"help": "Response length limit in tokens."})
    seed: int = field(default=0, metadata={"help": "Sampling seed."})
    output: str = field(default="search_tree.html", metadata={"help": "HTML page to write."})
    png: str | None = field(default=None, metadata={"help": "PNG to write (default: the HTML path with .png)."})

    def __post_init__(self):
        sources = [self.model is not None, self.generations is not None]
        if sum(sources) != 1:
            raise ValueError(
                "Give either --model <folder> with a problem (--numbers ... --target T, or --prompt), or "
                "--generations <file> --index k to draw a recorded search."
            )
        if self.model is not None and self.prompt is None and (self.numbers is None or self.target is None):
            raise ValueError(
                "--model needs a problem: --numbers 3 5 2 --target 16 (Countdown) or --prompt '<prompt>'."
            )


def problem_prompt(numbers=None, target=None, prompt=None, task=None) -> str:
    """The prompt of a Countdown problem (``numbers``, ``target``) or a prompt of any task, validated."""
    if prompt is not None:
        task_of(prompt, task).parse_prompt(prompt)  # a ValueError naming the expected format
        return prompt
    task = get_task(task or "countdown")
    if set(task.problem_columns) != {"numbers", "target"}:
        raise ValueError(f"--numbers/--target make Countdown problems; task {task.name!r} needs --prompt.")
    return task.format_prompt(task.problem_from_row({"numbers": list(numbers), "target": int(target)}))


def visualize_search(args: VisualizeArguments) -> SearchView:
    """Run the search on one problem (or read a recorded one) and write its HTML page and PNG."""
    if args.generations is not None:
        result = load_generation(args.generations, args.index)
    else:
        from backtrack_trl.decoding import SelfBacktrackingDecoder

        prompt = problem_prompt(args.numbers, args.target, args.prompt, args.task)
        task = task_of(prompt, args.task)
        decoder = SelfBacktrackingDecoder.from_pretrained(
            args.model, device="cpu", n=args.n, b=args.b, selection=args.selection, temperature=args.temperature,
            max_new_tokens=args.max_new_tokens, seed=args.seed, task=task, model_option="--model",
        )  # fmt: skip
        result = decoder.solve([prompt])[0]
    png = args.png or str(Path(args.output).with_suffix(".png"))
    view = write_search_view(result, args.output, png=png, task=args.task)
    info = summary(view)
    verdicts = ", ".join(
        f"{mode}: {'correct' if v['correct'] else v['reason']}" for mode, v in info["verdicts"].items()
    )
    print(f"{info['question']}: {info['samples']} samples, {info['states']} states, {info['rollbacks']} rollbacks; "
          f"answer {info['answer']!r} ({verdicts})\nwrote {args.output} and {png}")  # fmt: skip
    return view
