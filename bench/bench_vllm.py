"""Benchmark: the same decoders on the HF backend (this process) and the vLLM backend (a vLLM server), on one model.
Prints a markdown table: strict accuracy [95% Wilson interval], oracle, problems/s, generated tokens/s, and how many
greedy answers are identical. Not a test: timings are never asserted.

The vLLM server runs from its own environment (``make vllm-env`` builds ``.venv-vllm`` with the CPU build of vLLM);
without it, or without the model, the benchmark says so and exits 0. Both backends sample with their own random
draws, so their search accuracies agree within noise, not exactly; greedy answers should be identical.

Usage:

    python bench/bench_vllm.py --model results/sudoku-tiny/models/backtrack-sft \\
        --data results/sudoku-tiny/data/backtrack --problems 200
    python bench/bench_vllm.py --model <folder> --data <folder> --server_url http://localhost:8000   # a running server
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from backtrack_trl.decoding import build_decoder, load_model_and_tokenizer  # noqa: E402
from backtrack_trl.decoding.vllm_http import VLLMServer  # noqa: E402
from backtrack_trl.decoding.vllm_launch import launch_vllm_server  # noqa: E402
from backtrack_trl.evaluation.intervals import format_with_interval  # noqa: E402
from backtrack_trl.evaluation.scoring import score_results  # noqa: E402
from backtrack_trl.tasks import get_task  # noqa: E402


DEFAULT_MODEL = ROOT / "results" / "countdown-tiny" / "models" / "backtrack-sft"
DEFAULT_DATA = ROOT / "results" / "countdown-tiny" / "data" / "backtrack"
DEFAULT_DECODERS = ["greedy", "best_of_n:n=8", "self_backtracking:n=8,b=1", "self_backtracking:n=32,b=1"]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(DEFAULT_MODEL), help="Model folder (with its tokenizer).")
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="Hub-layout dataset folder with the test split.")
    parser.add_argument(
        "--task", default=None, help="Task of the data (default: read from the model's card, else countdown)."
    )
    parser.add_argument("--split", default="test_seen")
    parser.add_argument("--problems", type=int, default=200)
    parser.add_argument("--decoders", nargs="+", default=DEFAULT_DECODERS, help="Decoder specs (as in evaluation).")
    parser.add_argument("--max_new_tokens", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--vllm_python", default=str(ROOT / ".venv-vllm" / "bin" / "python"))
    parser.add_argument("--server_url", default=None, help="Use this running vLLM server instead of starting one.")
    parser.add_argument(
        "--server_args", default="--dtype float32 --no-enable-chunked-prefill --max-num-batched-tokens 8192"
    )
    parser.add_argument("--output", default=None, help="Also write the table (markdown) and the figures (JSON) here.")
    return parser.parse_args(argv)


def guess_task(data_folder: str) -> str:
    from datasets import load_dataset

    columns = set(load_dataset(data_folder, split="test_seen").column_names)
    for name in ("countdown", "sudoku"):
        if set(get_task(name).problem_columns) <= columns:
            return name
    return "countdown"


def run(decoder, prompts, problems, task, seed):
    began = time.perf_counter()
    results = decoder.solve(prompts, seeds=[seed + i for i in range(len(prompts))])
    seconds = time.perf_counter() - began
    _, rows = score_results(problems, results, task=task)  # strict accuracy and oracle as the evaluation scores them
    correct = sum(row["correct_strict"] for row in rows)
    oracle = sum(row["oracle_strict"] for row in rows)
    tokens = sum(r.tokens_generated for r in results)
    return results, {"seconds": seconds, "correct": correct, "oracle": oracle, "tokens": tokens}


def main(argv=None) -> int:
    args = parse_args(argv)
    if not Path(args.model).is_dir() or not Path(args.data).is_dir():
        print(f"Skipped: no model at {args.model} or no data at {args.data} (train one, or pass --model/--data).")
        return 0
    if not args.server_url and not Path(args.vllm_python).exists():
        print(f"Skipped: no vLLM environment at {args.vllm_python} (`make vllm-env`), and no --server_url.")
        return 0
    from datasets import load_dataset

    task = get_task(args.task or guess_task(args.data))
    rows = load_dataset(args.data, split=args.split)
    rows = rows.select(range(min(args.problems, len(rows))))
    prompts = list(rows["prompt"])
    problems = [task.problem_from_row(r) for r in rows.select_columns(list(task.problem_columns))]
    model, tokenizer = load_model_and_tokenizer(args.model)
    threads = os.environ.get("OMP_NUM_THREADS", "unset")
    server = (
        contextlib.nullcontext(args.server_url)
        if args.server_url
        else launch_vllm_server(args.model, python=args.vllm_python, extra_args=args.server_args.split(),
                                env={"OMP_NUM_THREADS": threads if threads != "unset" else "1",
                                     "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "2")})
    )  # fmt: skip
    figures, lines = [], []
    with server as url:
        client = VLLMServer(url)
        greedy = {}
        for spec in args.decoders:
            from backtrack_trl.evaluation.specs import parse_decoder_spec

            label, method, options = parse_decoder_spec(spec)
            options.setdefault("max_new_tokens", args.max_new_tokens)
            for backend, engine in (("hf", model), ("vllm", client)):
                decoder = build_decoder(method, engine, tokenizer, task=task, backend=backend, **options)
                results, figure = run(decoder, prompts, problems, task, args.seed)
                if method == "greedy":
                    greedy[backend] = [r.completion for r in results]
                figure.update(decoder=label, backend=backend, problems=len(prompts))
                figures.append(figure)
                print(f"{label} [{backend}]: {figure}", file=sys.stderr, flush=True)
    n = len(prompts)
    lines.append(f"Model `{args.model}` ({task.name}), {n} `{args.split}` problems, OMP_NUM_THREADS={threads} "
                 f"(HF in this process; the vLLM server started with the same), seeds {args.seed}..{args.seed + n - 1}.")  # fmt: skip
    lines.append("")
    lines.append("| Decoder | Backend | Strict % [95% CI] | Oracle % | Problems/s | Tokens/s | Tokens / problem |")
    lines.append("|---|---|---|---|---|---|---|")
    for f in figures:
        lines.append(
            f"| {f['decoder']} | {f['backend']} | {format_with_interval(100 * f['correct'] / n, n)} | "
            f"{100 * f['oracle'] / n:.1f} | {n / f['seconds']:.1f} | {f['tokens'] / f['seconds']:.0f} | "
            f"{f['tokens'] / n:.0f} |"
        )
    if set(greedy) == {"hf", "vllm"}:
        same = sum(a == b for a, b in zip(greedy["hf"], greedy["vllm"]))
        lines.append("")
        lines.append(f"Greedy answers identical on both backends: {same} / {n}.")
    table = "\n".join(lines)
    print(table)
    if args.output:
        from backtrack_trl.atomic_io import atomic_write_json, atomic_write_text

        atomic_write_text(Path(args.output), table + "\n")
        atomic_write_json(Path(args.output).with_suffix(".json"), figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
