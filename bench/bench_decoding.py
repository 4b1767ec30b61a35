"""Benchmark: our batched KV-cache self-backtracking search vs the released decoder, and our sampling loop vs
plain batched ``model.generate`` sampling. Prints markdown tables (not a test: timings are never asserted).

Model: ``models/countdown-tiny/backtrack-sft`` when it exists, else a tiny random Llama with the task tokenizer.
Problems: the ``test_seen`` split of ``data/countdown-tiny/backtrack`` when it exists, else freshly sampled
3-number problems. Times are the best of ``--repeats`` interleaved runs (the machine may be shared). ``--device``
picks where the model runs (default: CPU; ``cuda`` or ``auto`` for a GPU).

Usage:

    python bench/bench_decoding.py                       # defaults
    python bench/bench_decoding.py --problems 100 --ns 8 32 --output results/bench_decoding.md
    python bench/bench_decoding.py --device cuda           # on the GPU
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path

import torch


ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from backtrack_trl.decoding import (  # noqa: E402
    ReleasedSelfBacktrackingDecoder,
    SelfBacktrackingDecoder,
    load_model_and_tokenizer,
)
from backtrack_trl.decoding.api import resolve_device  # noqa: E402
from backtrack_trl.evaluation.scoring import score_results  # noqa: E402
from backtrack_trl.tasks.countdown.format import Problem, format_prompt, parse_prompt  # noqa: E402


DEFAULT_MODEL = ROOT / "models" / "countdown-tiny" / "backtrack-sft"
DEFAULT_DATA = ROOT / "data" / "countdown-tiny" / "backtrack"


def check_device(option: str) -> torch.device:
    """``--device`` as a torch device (``auto``: the GPU when one is visible); one clear error for a bad one."""
    try:
        device = torch.device(resolve_device(option))
    except RuntimeError:
        raise SystemExit(f"--device {option!r} is not a device: use cpu, cuda, cuda:<index> or auto.") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {option!r}: no CUDA GPU is visible (torch.cuda.is_available() is False); use cpu.")
    if device.type not in ("cpu", "cuda"):
        raise SystemExit(f"--device {option!r}: this benchmark runs on cpu or cuda only.")
    return device


def device_name(device: torch.device) -> str:
    return f"{device} ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else str(device)


def warm_up(model, tokenizer, problems) -> None:
    """One untimed run of each decoder on a GPU: the released decoder is timed once, so CUDA's start-up (kernel
    loading, cuBLAS handles) would otherwise land in its time only."""
    SelfBacktrackingDecoder(model, tokenizer, n=2, b=1, max_new_tokens=8).solve(problems[:2])
    ReleasedSelfBacktrackingDecoder(model, tokenizer, n=2, b=1, max_length=40).solve(problems[:1])


def load_model(path: str | None, device: torch.device | str = "cpu"):
    if path or DEFAULT_MODEL.is_dir():
        model_path = path or str(DEFAULT_MODEL)
        model, tokenizer = load_model_and_tokenizer(model_path, device=device)
        return model, tokenizer, model_path
    from backtrack_trl.tasks.tokenizer import build_countdown_tokenizer
    from backtrack_trl.training.model_init import init_tiny_llama

    tokenizer = build_countdown_tokenizer()
    model = init_tiny_llama(tokenizer, hidden_size=128, intermediate_size=512, num_hidden_layers=2).eval().to(device)
    return model, tokenizer, "random tiny Llama (h128 x 2 layers; no trained model found)"


def load_problems(count: int, data: str | None) -> tuple[list[Problem], str]:
    folder = data or (str(DEFAULT_DATA) if DEFAULT_DATA.is_dir() else None)
    if folder:
        import datasets

        rows = datasets.load_dataset(folder)["test_seen"]
        rows = rows.select(range(min(count, len(rows))))
        return [parse_prompt(prompt) for prompt in rows["prompt"]], f"{folder} (test_seen)"
    from backtrack_trl.tasks.countdown.generator import CountdownConfig, generate_problems, split_targets

    config = CountdownConfig(num_numbers=3, min_number=1, max_number=20, min_target=1, max_target=100)
    seen, _ = split_targets(config)
    return generate_problems(config, count, seen, random.Random(0)), "sampled 3-number problems (1..20)"


def accuracy(problems, results) -> tuple[float, float]:
    """Strict accuracy and oracle in %, as the evaluation scores them."""
    _, rows = score_results(problems, results)
    correct = sum(row["correct_strict"] for row in rows)
    oracle = sum(row["oracle_strict"] for row in rows)
    return 100 * correct / len(problems), 100 * oracle / len(problems)


def timed(function, repeats: int):
    best, value = float("inf"), None
    for _ in range(repeats):
        began = time.perf_counter()
        value = function()
        best = min(best, time.perf_counter() - began)
    return best, value


def search_vs_released(model, tokenizer, problems, ns, repeats, max_length) -> list[str]:
    """Every decoder on the same problems; our decoders best of ``repeats``, the released decoder once."""
    # Same length budget for all: the released decoder's max_length counts the prompt too.
    longest_prompt = max(len(tokenizer(format_prompt(p))["input_ids"]) for p in problems)
    max_new_tokens = max_length - longest_prompt
    rows = []
    for n in ns:
        settings = [
            ("ours", "self-backtracking (ours)", SelfBacktrackingDecoder(
                model, tokenizer, n=n, b=1, max_new_tokens=max_new_tokens), repeats),
            ("ours", "self-backtracking (ours), released options (K=floor(sqrt N), top-k 50, sum)",
             SelfBacktrackingDecoder(model, tokenizer, n=n, b=1, k="released", top_k=50, duplicates="sum",
                                     max_new_tokens=max_new_tokens), repeats),
            # the faithful baseline: the released code's K = floor(sqrt N) and top-k 50 (its defaults)
            ("released", "released decoder (faithful re-implementation)", ReleasedSelfBacktrackingDecoder(
                model, tokenizer, n=n, b=1, max_length=max_length), 1),
        ]  # fmt: skip
        for kind, name, decoder, runs in settings:
            seconds, results = timed(lambda decoder=decoder: decoder.solve(problems), runs)
            acc, oracle = accuracy(problems, results)
            tokens = sum(r.tokens_generated for r in results) / len(problems)
            rows.append({"kind": kind, "name": name, "n": n, "acc": acc, "oracle": oracle,
                         "per": seconds / len(problems), "tokens": tokens})  # fmt: skip
    released = {row["n"]: row for row in rows if row["kind"] == "released"}
    lines = [
        "| Decoder (b=1) | N | Strict acc. % | Oracle % | ms / problem | Tokens / problem | Speed-up vs released, same N |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        speedup = released[row["n"]]["per"] / row["per"]
        lines.append(
            f"| {row['name']} | {row['n']} | {row['acc']:.1f} | {row['oracle']:.1f} | {1000 * row['per']:.1f} | "
            f"{row['tokens']:.0f} | {speedup:.1f}x |"
        )
    lines.append("")
    ours = [row for row in rows if row["kind"] == "ours"]
    for n, reference in released.items():
        good = [row for row in ours if row["acc"] >= reference["acc"]]
        if good:
            best = min(good, key=lambda row: row["per"])
            lines.append(
                f"- At equal or better accuracy than the released decoder with N={n} ({reference['acc']:.1f}%): "
                f"{best['name']} with N={best['n']} ({best['acc']:.1f}%) is "
                f"**{reference['per'] / best['per']:.1f}x** faster."
            )
        else:
            lines.append(f"- None of our settings matched the released decoder's {reference['acc']:.1f}% at N={n}.")
    return lines


def throughput(model, tokenizer, problems, n, repeats, max_new_tokens) -> list[str]:
    prompts = [format_prompt(p) for p in problems]
    engine = SelfBacktrackingDecoder(
        model, tokenizer, n=n, b=0, max_new_tokens=max_new_tokens, batch_size=len(prompts)
    )
    inputs = tokenizer(prompts, return_tensors="pt", padding=True, padding_side="left").to(model.device)
    width = inputs["input_ids"].shape[1]

    def plain():
        out = model.generate(
            **inputs, do_sample=True, temperature=0.7, top_k=None, num_return_sequences=n,
            max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id,
        )  # fmt: skip
        new = out[:, width:]
        return int((new != tokenizer.pad_token_id).sum())

    def ours():
        return sum(r.tokens_generated for r in engine.solve(prompts))

    best = {"plain": (float("inf"), 0), "ours": (float("inf"), 0)}
    for _ in range(repeats):  # interleaved, best of `repeats`
        for name, function in (("plain", plain), ("ours", ours)):
            seconds, tokens = timed(function, 1)
            if seconds < best[name][0]:
                best[name] = (seconds, tokens)
    rate = {name: tokens / seconds for name, (seconds, tokens) in best.items()}
    rows = len(prompts) * n
    return [
        f"| Sampler (batch = {len(prompts)} problems x N={n} = {rows} rows) | Tokens | Seconds | Tokens/s | Ratio |",
        "|---|---|---|---|---|",
        f"| plain `model.generate(do_sample=True, num_return_sequences={n})` | {best['plain'][1]} | "
        f"{best['plain'][0]:.2f} | {rate['plain']:.0f} | 1.00 |",
        f"| our search loop (b=0: sampling, per-row stops, log-probs) | {best['ours'][1]} | {best['ours'][0]:.2f} | "
        f"{rate['ours']:.0f} | {rate['ours'] / rate['plain']:.2f} |",
    ]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None, help="model folder (default: the CPU study's backtrack model)")
    parser.add_argument("--data", default=None, help="dataset folder with a test_seen split")
    parser.add_argument("--problems", type=int, default=64, help="problems for the search comparison")
    parser.add_argument("--throughput_problems", type=int, default=16)
    parser.add_argument("--ns", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max_length", type=int, default=50, help="total tokens (the released default: 50)")
    parser.add_argument("--max_new_tokens", type=int, default=64, help="response tokens in the throughput test")
    # One thread by default: on a shared or small CPU, torch's multi-threaded kernels on tiny models mostly spin
    # (70x slower measured with 5 processes on 2 cores); pass --threads 0 to keep torch's default.
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    parser.add_argument("--output", default=None, help="also write the tables to this markdown file")
    parser.add_argument("--device", default="cpu", help="where the model runs: cpu (default), cuda, cuda:<i>, auto")
    args = parser.parse_args(argv)
    device = check_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    model, tokenizer, model_name = load_model(args.model, device)
    problems, source = load_problems(max(args.problems, args.throughput_problems), args.data)
    if device.type == "cuda":
        warm_up(model, tokenizer, problems)
    lines = [
        f"Model: {model_name}. Problems: {source}. Device: {device_name(device)}. CPU threads: "
        f"{torch.get_num_threads()}. Strict checker. "
        f"{args.problems} problems; best of {args.repeats} runs for our decoders (the released decoder runs "
        "once); seeds: problem i gets seed i (decoder seed 0); the same length budget for all (the released max_length, prompt included).",
        "",
    ]
    lines += search_vs_released(model, tokenizer, problems[: args.problems], args.ns, args.repeats, args.max_length)
    lines.append("")
    lines += throughput(
        model, tokenizer, problems[: args.throughput_problems], max(args.ns), args.repeats, args.max_new_tokens
    )
    text = "\n".join(lines) + "\n"
    print(text)
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(text)


if __name__ == "__main__":
    main()
