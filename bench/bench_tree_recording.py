"""Benchmark: what recording the search tree (``SearchResult.tree``, drawn by ``backtrack_trl.visualize``) costs the
self-backtracking search. Prints a markdown table (not a test: timings are never asserted).

"Before" and "after" are two commits (``--before``, ``--after``; default: the commit that added the recording and its
parent, so only the recording differs), each one's ``src/`` extracted with ``git archive`` into a temporary folder
(``--after .`` takes this checkout's ``src/``, uncommitted edits included). Each version runs in its own process
(same model, same problems, same seeds; a warm-up solve first), the processes interleaved, best of ``--repeats``
processes x ``--inner`` runs.

Model: ``--model``, else ``results/countdown-tiny/models/backtrack-sft`` or ``models/countdown-tiny/backtrack-sft``
when one exists, else a tiny random Llama (``recipes/countdown-tiny/init_model.yaml``'s size). Problems: the first
``--problems`` of ``test_seen`` of ``data/countdown-tiny/backtrack`` when it exists, else sampled 4-number problems.

Usage:

    OMP_NUM_THREADS=1 python bench/bench_tree_recording.py                 # 200 problems, N=8 and N=32, b=1
    python bench/bench_tree_recording.py --model /path/to/backtrack-sft --problems 100 --repeats 5
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
# The commit that made the search record its tree, and its parent.
AFTER = "cf95700"
BEFORE = "bfb423c"
MODELS = (
    ROOT / "results" / "countdown-tiny" / "models" / "backtrack-sft",
    ROOT / "models" / "countdown-tiny" / "backtrack-sft",
)
DATA = ROOT / "data" / "countdown-tiny" / "backtrack"


def worker(args) -> None:
    """Run in a process whose PYTHONPATH points at one version's src/: time the search, print JSON."""
    import torch

    torch.set_num_threads(args.threads)
    import backtrack_trl
    from backtrack_trl.decoding import SelfBacktrackingDecoder, load_model_and_tokenizer

    if args.model:
        model, tokenizer = load_model_and_tokenizer(args.model, device="cpu")
    else:
        import yaml

        from backtrack_trl.modeling import init_tiny_llama
        from backtrack_trl.tokenization import build_countdown_tokenizer

        size = yaml.safe_load((ROOT / "recipes" / "countdown-tiny" / "init_model.yaml").read_text())
        keys = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")
        tokenizer = build_countdown_tokenizer()
        model = init_tiny_llama(tokenizer, **{k: size[k] for k in keys if k in size}, seed=0).eval()
    prompts = json.loads(Path(args.prompts).read_text())
    out = {"src": os.path.dirname(backtrack_trl.__file__), "threads": torch.get_num_threads(), "runs": {}}
    for n in args.ns:
        decoder = SelfBacktrackingDecoder(model, tokenizer, n=n, b=1, max_new_tokens=args.max_new_tokens)
        decoder.solve(prompts[:8])  # warm-up: first-call costs are not the search's
        best = float("inf")
        for _ in range(args.inner):
            began = time.perf_counter()
            results = decoder.solve(prompts)
            best = min(best, time.perf_counter() - began)
        out["runs"][str(n)] = {
            "seconds": best,
            "tokens": sum(r.tokens_generated for r in results),
            "completions": [r.completion for r in results],
            "tree": getattr(results[0], "tree", None) is not None,
        }
    print("RESULT " + json.dumps(out), flush=True)


def extract_src(commit: str, folder: Path) -> Path:
    """``src/`` of ``commit`` into ``folder`` (git archive: no worktree, nothing left in the repository)."""
    data = subprocess.run(["git", "archive", commit, "src"], cwd=ROOT, check=True, capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        archive.extractall(folder, filter="data")
    return folder / "src"


def problems(count: int) -> tuple[list[str], str]:
    sys.path.insert(0, str(ROOT / "src"))
    if DATA.is_dir():
        import datasets

        rows = datasets.load_dataset(str(DATA))["test_seen"]
        return list(rows.select(range(min(count, len(rows))))["prompt"]), f"{DATA.relative_to(ROOT)} (test_seen)"
    import random

    from backtrack_trl.tasks.countdown.format import format_prompt
    from backtrack_trl.tasks.countdown.generator import CountdownConfig, generate_problems, split_targets

    config = CountdownConfig()
    seen, _ = split_targets(config)
    return [format_prompt(p) for p in generate_problems(config, count, seen, random.Random(0))], "sampled problems"


def run_version(src: Path, args, prompts_file: str) -> dict:
    env = dict(os.environ, PYTHONPATH=str(src), OMP_NUM_THREADS=str(args.threads), HF_HUB_OFFLINE="1")
    command = [sys.executable, __file__, "--worker", "--prompts", prompts_file, "--threads", str(args.threads),
               "--max_new_tokens", str(args.max_new_tokens), "--inner", str(args.inner), "--ns", *map(str, args.ns)]  # fmt: skip
    if args.model:
        command += ["--model", args.model]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"worker on {src} failed:\n{done.stderr[-3000:]}")
    return json.loads(line[len("RESULT ") :])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--problems", type=int, default=200)
    parser.add_argument("--ns", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--repeats", type=int, default=3, help="interleaved processes per version")
    parser.add_argument("--inner", type=int, default=2, help="timed runs per process (after a warm-up)")
    parser.add_argument("--max_new_tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--before", default=BEFORE, help="commit without tree recording")
    parser.add_argument("--after", default=AFTER, help="commit with tree recording ('.': this checkout's src/)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--prompts", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args)
    if args.model is None:
        args.model = next((str(path) for path in MODELS if path.is_dir()), None)
    prompts, source = problems(args.problems)
    best: dict[tuple[str, int], float] = {}
    tokens: dict[tuple[str, int], int] = {}
    same = {}
    with tempfile.TemporaryDirectory() as tmp:
        prompts_file = os.path.join(tmp, "prompts.json")
        Path(prompts_file).write_text(json.dumps(prompts))
        after = ROOT / "src" if args.after == "." else extract_src(args.after, Path(tmp) / "after")
        versions = {"before": extract_src(args.before, Path(tmp) / "before"), "after": after}
        for _ in range(args.repeats):
            outputs = {}
            for name, src in versions.items():  # interleaved: a busy moment hits both
                outputs[name] = run_version(src, args, prompts_file)
                for n, run in outputs[name]["runs"].items():
                    key = (name, int(n))
                    best[key] = min(best.get(key, float("inf")), run["seconds"])
                    tokens[key] = run["tokens"]
                    if name == "after" and not run["tree"] or name == "before" and run["tree"]:
                        raise RuntimeError(f"{name} ({outputs[name]['src']}): tree recorded = {run['tree']}")
            for n in args.ns:
                same[n] = (
                    outputs["before"]["runs"][str(n)]["completions"] == outputs["after"]["runs"][str(n)]["completions"]
                )
    count = len(prompts)
    print(
        f"Model: {args.model or 'random tiny Llama (no trained model found)'}. Problems: {count} from {source}. "
        f"Search b=1, K=floor(sqrt N), max_new_tokens={args.max_new_tokens}, seeds 0..{count - 1}. "
        f"Threads: {args.threads} (OMP_NUM_THREADS={args.threads}). Best of {args.repeats} interleaved processes x {args.inner} runs each (after a warm-up). "
        f"Before: commit {args.before} (no tree); after: {'this checkout' if args.after == '.' else 'commit ' + args.after}.\n"
    )
    print(
        "| N | ms / problem before | ms / problem after (tree recorded) | Overhead | Tokens / problem | Same answers |"
    )
    print("|---|---|---|---|---|---|")
    for n in args.ns:
        before, after = best[("before", n)], best[("after", n)]
        print(
            f"| {n} | {1000 * before / count:.2f} | {1000 * after / count:.2f} | {100 * (after - before) / before:+.1f}% "
            f"| {tokens[('after', n)] / count:.0f} | {'yes' if same[n] else 'no'} |"
        )


if __name__ == "__main__":
    main()
