"""Benchmark: decoding throughput with a Llama-3-sized vocabulary (128,257 tokens) on a tiny model, on CPU.

What it measures is the per-step cost that grows with the vocabulary rather than with the model: the log-softmax,
the sampling (softmax, cumulative sum, inverse-CDF draw; sort for top-p) and the bookkeeping of finished rows. The
model is a random 2-layer Llama (hidden 64, final norm scaled so that its next-token distributions are peaked
like a trained model's) whose vocabulary is the Countdown task tokenizer plus filler tokens up to
128,257 ids, so its matmuls are small and the vocabulary-wide work dominates, as it does for the engine's overhead on
a GPU. Rows stop on EOS / ``<backtrack>`` when the model writes them, so the token counts are printed with the
rates. Not a test: timings are never asserted.

``--before_src DIR`` also runs the same rows with the package found in ``DIR`` (e.g. an older commit's ``src``,
``git archive <commit> src | tar -x -C /tmp/before``) in a subprocess, and prints both columns.

Usage:

    python bench/bench_engine_vocab.py
    python bench/bench_engine_vocab.py --before_src /tmp/before/src --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
VOCAB = 128_257  # Llama-3.2's 128,256 tokens + <backtrack>

# (label, method, options, problems)
ROWS = [
    ("greedy", "greedy", {}, 16),
    ("search N=16 b=1 (T=0.7)", "self_backtracking", {"n": 16, "b": 1, "temperature": 0.7}, 4),
    ("best-of-16 (T=0.7, top_p=0.95)", "best_of_n", {"n": 16, "temperature": 0.7, "top_p": 0.95}, 4),
]


def build(vocab: int = VOCAB):
    """The Countdown tokenizer with filler tokens up to ``vocab`` ids (never produced by encoding task text), and a
    random tiny Llama over them."""
    import json as _json

    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    from backtrack_trl.tasks.tokenizer import build_countdown_tokenizer
    from backtrack_trl.training.model_init import init_tiny_llama

    base = build_countdown_tokenizer()
    data = _json.loads(base.backend_tokenizer.to_str())
    words = data["model"]["vocab"]
    start = max(words.values()) + 1
    words.update({f"<f{i}>": start + i for i in range(vocab - len(base))})
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(_json.dumps(data)),
        bos_token=base.bos_token,
        eos_token=base.eos_token,
        pad_token=base.pad_token,
        unk_token=base.unk_token,
        extra_special_tokens=["<backtrack>"],
        clean_up_tokenization_spaces=False,
    )
    model = init_tiny_llama(
        tokenizer, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2, seed=0
    )
    import torch

    with torch.no_grad():  # sharper next-token distributions, as a trained model has (a random one is ~uniform)
        model.model.norm.weight.fill_(15.0)
    return model.eval(), tokenizer


def measure(repeats: int, max_new_tokens: int, seed: int) -> list[dict]:
    import torch

    from backtrack_trl.decoding import build_decoder
    from backtrack_trl.tasks.countdown.format import Problem, format_prompt

    torch.manual_seed(seed)
    model, tokenizer = build()
    assert len(tokenizer) == VOCAB, len(tokenizer)
    problems = [format_prompt(Problem((3 + i % 7, 5 + i % 5, 2 + i % 3), 10 + i)) for i in range(16)]
    out = []
    for label, method, options, count in ROWS:
        decoder = build_decoder(method, model, tokenizer, max_new_tokens=max_new_tokens, seed=seed, **options)
        decoder.solve(problems[:1])  # warm-up (token texts, allocator)
        best, tokens = float("inf"), 0
        for _ in range(repeats):
            start = time.perf_counter()
            results = decoder.solve(problems[:count])
            best = min(best, time.perf_counter() - start)
            tokens = sum(r.tokens_generated for r in results)
        out.append({"label": label, "problems": count, "tokens": tokens, "seconds": best})
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=2, help="Best of this many runs per row.")
    parser.add_argument("--max_new_tokens", type=int, default=24)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--before_src", default=None, help="Also run the package in this folder (a 'before' column).")
    parser.add_argument("--src", default=str(ROOT / "src"), help=argparse.SUPPRESS)
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)  # one run's rows, for --before_src
    args = parser.parse_args(argv)
    sys.path.insert(0, args.src)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    rows = measure(args.repeats, args.max_new_tokens, args.seed)
    if args.json:
        print(json.dumps(rows))
        return 0
    before = None
    if args.before_src:
        command = [sys.executable, __file__, "--src", args.before_src, "--json", "--repeats", str(args.repeats),
                   "--max_new_tokens", str(args.max_new_tokens), "--seed", str(args.seed)]  # fmt: skip
        before = json.loads(
            subprocess.run(command, check=True, capture_output=True, text=True).stdout.splitlines()[-1]
        )
    threads = os.environ.get("OMP_NUM_THREADS") or f"{torch.get_num_threads()} (torch default)"
    print(
        f"Vocabulary {VOCAB:,} (tiny random Llama, h64 x 2 layers), CPU, threads {threads}, seed {args.seed}, "
        f"max_new_tokens {args.max_new_tokens}, best of {args.repeats}.\n"
    )
    if before is None:
        print("| decoder | problems | tokens | s | tokens/s |\n|---|---:|---:|---:|---:|")
        for row in rows:
            print(f"| {row['label']} | {row['problems']} | {row['tokens']:,} | {row['seconds']:.2f} | "
                  f"{row['tokens'] / row['seconds']:,.0f} |")  # fmt: skip
        return 0
    print("| decoder | problems | tokens (before / after) | tokens/s before | tokens/s after | speed-up |")
    print("|---|---:|---:|---:|---:|---:|")
    for old, new in zip(before, rows):
        old_rate, new_rate = old["tokens"] / old["seconds"], new["tokens"] / new["seconds"]
        print(f"| {new['label']} | {new['problems']} | {old['tokens']:,} / {new['tokens']:,} | {old_rate:,.0f} | "
              f"{new_rate:,.0f} | {new_rate / old_rate:.2f}x |")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
