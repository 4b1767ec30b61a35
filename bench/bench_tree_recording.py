"""Benchmark: what recording the search tree (``SearchResult.tree``, drawn by ``backtrack_trl.viz.search_tree``) costs the
self-backtracking search. Prints a markdown table (not a test: timings are never asserted).

"After" is the search at ``--commit`` (default HEAD); "before" is the same source with the commits that brought in the
tree recording (:data:`RECORDING_COMMITS`, their changes to ``decoding/``) reverse-applied, so only the recording
differs. Both packages are extracted with ``git archive`` and imported under their own names (``bt_before``,
``bt_after``: the decoding code imports itself relatively), so both run in one process on the same model object,
problems and seeds, alternating run by run (the order flips every round), which keeps a shared machine's load swings
out of the comparison. Reported: the best of ``--repeats`` runs per version and the median of the per-round ratios.

Model: ``--model``, else ``results/countdown-tiny/models/backtrack-sft`` or ``models/countdown-tiny/backtrack-sft``
when one exists, else a tiny random Llama (``recipes/countdown-tiny/init_model.yaml``'s size). Problems: the first
``--problems`` of ``test_seen`` of ``data/countdown-tiny/backtrack`` when it exists, else sampled 4-number problems.

Usage:

    OMP_NUM_THREADS=1 python bench/bench_tree_recording.py                 # 200 problems, N=8 and N=32, b=1
    python bench/bench_tree_recording.py --model /path/to/backtrack-sft --problems 100 --repeats 5
"""

from __future__ import annotations

import argparse
import importlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
# The commits that brought the tree recording into the search (a later change to it is added here).
RECORDING_COMMITS = ("cf95700", "5c675d4")
MODELS = (
    ROOT / "results" / "countdown-tiny" / "models" / "backtrack-sft",
    ROOT / "models" / "countdown-tiny" / "backtrack-sft",
)
DATA = ROOT / "data" / "countdown-tiny" / "backtrack"


def extract_src(commit: str, folder: Path) -> Path:
    """``src/`` of ``commit`` into ``folder`` (git archive: no worktree, nothing left in the repository)."""
    done = subprocess.run(["git", "archive", commit, "src"], cwd=ROOT, capture_output=True)
    if done.returncode != 0:
        raise SystemExit(f"git archive {commit}: {done.stderr.decode().strip()} (a shallow clone? pass --commit)")
    data = done.stdout
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


def load_versions(folder: Path, commit: str) -> dict:
    """``{"before": decoding module, "after": decoding module}``: ``commit``'s package without and with the tree
    recording, each imported under its own name."""
    packages = folder / "packages"
    after = extract_src(commit, folder / "after")
    before = extract_src(commit, folder / "before")
    for change in reversed(RECORDING_COMMITS):
        patch = subprocess.run(["git", "diff", f"{change}^", change, "--", "src/backtrack_trl/decoding"], cwd=ROOT,
                               capture_output=True, check=True).stdout  # fmt: skip
        done = subprocess.run(["git", "apply", "-R", "-"], cwd=before.parent, input=patch, capture_output=True)
        if done.returncode != 0:
            raise SystemExit(f"Could not take the recording of {change} out of {commit}: {done.stderr.decode()}")
    for label, src in (("before", before), ("after", after)):
        shutil.copytree(src / "backtrack_trl", packages / f"bt_{label}")
    sys.path.insert(0, str(packages))
    return {label: importlib.import_module(f"bt_{label}.decoding") for label in ("before", "after")}


def load_model(path: str | None, decoding):
    if path:
        return decoding.load_model_and_tokenizer(path, device="cpu")
    import yaml

    tokenization = importlib.import_module("bt_after.tokenization")
    modeling = importlib.import_module("bt_after.modeling")
    size = yaml.safe_load((ROOT / "recipes" / "countdown-tiny" / "init_model.yaml").read_text())
    keys = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")
    tokenizer = tokenization.build_countdown_tokenizer()
    model = modeling.init_tiny_llama(tokenizer, **{k: size[k] for k in keys if k in size}, seed=0).eval()
    return model, tokenizer


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--problems", type=int, default=200)
    parser.add_argument("--ns", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--repeats", type=int, default=5, help="alternating timed runs per version")
    parser.add_argument("--max_new_tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--commit", default="HEAD", help="the search to measure, with and without its recording")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    if args.model is None:
        args.model = next((str(path) for path in MODELS if path.is_dir()), None)
    prompts, source = problems(args.problems)
    count = len(prompts)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        versions = load_versions(Path(tmp), args.commit)
        model, tokenizer = load_model(args.model, versions["after"])
        for n in args.ns:
            decoders = {
                label: module.SelfBacktrackingDecoder(model, tokenizer, n=n, b=1, max_new_tokens=args.max_new_tokens)
                for label, module in versions.items()
            }
            for decoder in decoders.values():
                decoder.solve(prompts[:8])  # warm-up: first-call costs are not the search's
            times = {label: [] for label in decoders}
            outputs = {}
            for round_index in range(args.repeats):
                order = ["before", "after"] if round_index % 2 == 0 else ["after", "before"]
                for label in order:
                    began = time.perf_counter()
                    outputs[label] = decoders[label].solve(prompts)
                    times[label].append(time.perf_counter() - began)
            if getattr(outputs["before"][0], "tree", None) is not None or outputs["after"][0].tree is None:
                raise SystemExit("The recording was not taken out of 'before' (or is missing from 'after').")
            ratios = sorted(a / b for a, b in zip(times["after"], times["before"]))
            rows.append({
                "n": n,
                "before": min(times["before"]) / count,
                "after": min(times["after"]) / count,
                "median_ratio": ratios[len(ratios) // 2],
                "tokens": sum(r.tokens_generated for r in outputs["after"]) / count,
                "same": [r.completion for r in outputs["before"]] == [r.completion for r in outputs["after"]],
            })  # fmt: skip
    commit = subprocess.run(["git", "rev-parse", "--short=7", args.commit], cwd=ROOT, capture_output=True, text=True)
    print(
        f"Model: {args.model or 'random tiny Llama (no trained model found)'}. Problems: {count} from {source}. "
        f"Search b=1, K=floor(sqrt N), max_new_tokens={args.max_new_tokens}, seeds 0..{count - 1}. "
        f"Threads: {torch.get_num_threads()} (OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}). "
        f"{args.repeats} alternating runs per version in one process (after a warm-up). "
        f"After: commit {commit.stdout.strip()}; before: the same without the recording "
        f"({', '.join(RECORDING_COMMITS)} reverse-applied).\n"
    )
    print("| N | ms / problem before | ms / problem after (tree recorded) | Overhead (best runs) "
          "| Overhead (median of paired runs) | Tokens / problem | Same answers |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['n']} | {1000 * row['before']:.2f} | {1000 * row['after']:.2f} "
            f"| {100 * (row['after'] / row['before'] - 1):+.1f}% | {100 * (row['median_ratio'] - 1):+.1f}% "
            f"| {row['tokens']:.0f} | {'yes' if row['same'] else 'no'} |"
        )


if __name__ == "__main__":
    main()
