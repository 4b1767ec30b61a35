"""Benchmark: GRPO rollouts on CPU: TRL's default generation against our ``--rollout engine`` and ``--rollout search``
(backtrack_trl.training.rollouts), in completion tokens per second, and seconds per GRPO step with each rollout.

Rollouts: the same model and prompts (``--prompts`` distinct prompts x ``--generations`` each, temperature 0.7,
``--max_new_tokens`` 64). ``trl`` is ``model.generate`` exactly as ``GRPOTrainer`` calls it without vLLM (its
``GenerationConfig``: sampling, TRL's temperature/top-p/top-k, EOS ids, no compile; left-padded prompt ids) with the
completions cut after their first EOS as TRL cuts them; ``engine`` and ``search`` are the rollout functions
themselves. Tokens are the completion tokens handed to GRPO (the search also samples its round-1 continuations,
which are not counted). Best of ``--repeats`` runs after a warm-up. GRPO steps: ``recipes/grpo.py``'s CPU default
(``recipes/countdown-tiny/grpo/config_default.yaml``) for ``--steps`` steps per rollout; seconds per step is the
trainer's runtime over its steps (the first step included). Not a test: timings are never asserted.

Without ``--model`` / ``--dataset`` a random tiny Llama (the recipe's init size) and a small Countdown dataset are
built in a temporary folder, so ``make bench`` runs on a fresh clone. A random model's numbers say little: ``generate``
writes it until EOS or the limit while the engine stops its rows at ``<backtrack>``; measure a trained model.

Usage:

    python bench/bench_grpo.py
    OMP_NUM_THREADS=1 python bench/bench_grpo.py --model results/countdown-tiny-seeds/seed_42/models/self-correct \\
        --dataset results/countdown-tiny-seeds/seed_42/data/backtrack
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace


ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "recipes" / "countdown-tiny" / "grpo" / "config_default.yaml"
ROLLOUTS = ("trl", "engine", "search")


def build_defaults(folder: Path) -> tuple[str, str]:
    """A random tiny Llama (the recipe's init size) and a small Countdown backtrack dataset under ``folder``."""
    from backtrack_trl.data.build_config import BuildDatasetArguments
    from backtrack_trl.data.builder import build_dataset
    from backtrack_trl.data.hub_layout import write_hub_dataset
    from backtrack_trl.tasks.countdown import CountdownConfig
    from backtrack_trl.tasks.tokenizer import build_countdown_tokenizer
    from backtrack_trl.training.model_init import init_tiny_llama

    tokenizer = build_countdown_tokenizer()
    init_tiny_llama(tokenizer).save_pretrained(folder / "model")
    tokenizer.save_pretrained(folder / "model")
    args = BuildDatasetArguments(num_train_questions=64, num_test=4, num_proc=1)
    write_hub_dataset(build_dataset(args, CountdownConfig()), folder / "data")
    return str(folder / "model"), str(folder / "data")


def fake_trainer(model, tokenizer, temperature: float, max_new_tokens: int, step: int):
    """What a rollout function reads of a ``GRPOTrainer`` (one process, no ZeRO-3)."""
    accelerator = SimpleNamespace(
        unwrap_model=lambda m: m, process_index=0, state=SimpleNamespace(deepspeed_plugin=None, fsdp_plugin=None)
    )
    args = SimpleNamespace(
        seed=0, temperature=temperature, top_p=1.0, top_k=0, max_completion_length=max_new_tokens,
        ds3_gather_for_generation=True, gradient_checkpointing_kwargs=None,
    )  # fmt: skip
    return SimpleNamespace(
        model_wrapped=model, accelerator=accelerator, args=args, state=SimpleNamespace(global_step=step),
        processing_class=tokenizer,
    )  # fmt: skip


def trl_generate(model, tokenizer, prompts: list[str], temperature: float, max_new_tokens: int) -> list[list[int]]:
    """``GRPOTrainer._generate_single_turn``'s transformers path (TRL 1.16), outside the trainer."""
    import torch
    from transformers import GenerationConfig

    eos = [tokenizer.eos_token_id]
    config = GenerationConfig(
        max_new_tokens=max_new_tokens, do_sample=True, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=eos, temperature=temperature, top_p=1.0, top_k=0,
        min_p=None, repetition_penalty=1.0, cache_implementation=None, disable_compile=True,
    )  # fmt: skip
    rows = tokenizer(text=prompts)["input_ids"]
    width = max(map(len, rows))
    ids = torch.tensor([[tokenizer.pad_token_id] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=mask, generation_config=config)[:, width:].tolist()
    return [row[: row.index(eos[0]) + 1] if eos[0] in row else row for row in out]


def measure_rollouts(model_path: str, prompts: list[str], args) -> list[dict]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from backtrack_trl.tasks import get_task
    from backtrack_trl.training.rollouts import make_rollout

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).eval()
    entries = [p for p in prompts for _ in range(args.generations)]  # as TRL's RepeatSampler hands them over
    task = get_task("countdown")
    rows = []
    for rollout in ROLLOUTS:
        function = make_rollout(rollout, task)

        def run(step, function=function):
            if function is None:
                return trl_generate(model, tokenizer, entries, args.temperature, args.max_new_tokens)
            trainer = fake_trainer(model, tokenizer, args.temperature, args.max_new_tokens, step)
            return function(entries, trainer)["completion_ids"]

        torch.manual_seed(0)
        run(-1)  # warm-up
        best, tokens = float("inf"), 0
        for repeat in range(args.repeats):
            start = time.perf_counter()
            completions = run(repeat)
            best = min(best, time.perf_counter() - start)
            tokens = sum(map(len, completions))
        rows.append({"rollout": rollout, "tokens": tokens, "seconds": best})
    return rows


def measure_steps(model_path: str, dataset: str, args, folder: Path) -> dict[str, float]:
    from backtrack_trl.training.grpo import parse_grpo_args, train_grpo

    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    seconds = {}
    for rollout in ROLLOUTS:
        script_args, training_args, model_args = parse_grpo_args(
            ["--config", str(CONFIG), "--model_name_or_path", model_path, "--dataset_name", dataset,
             "--output_dir", str(folder / f"grpo-{rollout}"), "--rollout", rollout, "--max_steps", str(args.steps),
             "--logging_steps", "1", "--disable_tqdm", "true", "--max_train_samples", "256",
             "--max_completion_length", str(args.max_new_tokens), "--temperature", str(args.temperature),
             "--num_generations", str(args.generations), "--per_device_train_batch_size",
             str(args.prompts * args.generations), "--generation_batch_size", str(args.prompts * args.generations)]
        )  # fmt: skip
        metrics = train_grpo(script_args, training_args, model_args)
        seconds[rollout] = metrics["train_runtime"] / metrics["global_step"]
    return seconds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="A trained model folder (default: a random tiny Llama).")
    parser.add_argument("--dataset", default=None, help="A contract dataset folder with prompts (default: built).")
    parser.add_argument("--prompts", type=int, default=8, help="Distinct prompts per rollout.")
    parser.add_argument("--generations", type=int, default=8, help="Completions per prompt.")
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--max_new_tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3, help="Best of this many rollouts per row.")
    parser.add_argument("--steps", type=int, default=3, help="GRPO steps per rollout (0: skip the GRPO steps).")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.path.insert(0, str(ROOT / "src"))
    import datasets
    import torch

    datasets.disable_progress_bars()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model, dataset = args.model, args.dataset
        if model is None or dataset is None:
            built_model, built_dataset = build_defaults(folder)
            model, dataset = model or built_model, dataset or built_dataset
        prompts = list(dict.fromkeys(datasets.load_dataset(dataset, split="train")["prompt"]))[: args.prompts]
        rows = measure_rollouts(model, prompts, args)
        steps = measure_steps(model, dataset, args, folder) if args.steps else {}
    threads = os.environ.get("OMP_NUM_THREADS") or f"{torch.get_num_threads()} (torch default)"
    print(
        f"Model {args.model or 'random tiny Llama'}, CPU, threads {threads}, {args.prompts} prompts x "
        f"{args.generations} generations, T {args.temperature}, {args.max_new_tokens} new tokens, best of "
        f"{args.repeats}; GRPO: {args.steps} steps of the CPU default recipe per rollout.\n"
    )
    trl_rate = rows[0]["tokens"] / rows[0]["seconds"]
    print("| rollout | completion tokens | s per rollout | tokens/s | vs trl | s per GRPO step |")
    print("|---|---:|---:|---:|---:|---:|")
    for row in rows:
        rate = row["tokens"] / row["seconds"]
        step = f"{steps[row['rollout']]:.2f}" if row["rollout"] in steps else "-"
        print(f"| {row['rollout']} | {row['tokens']:,} | {row['seconds']:.2f} | {rate:,.0f} | "
              f"{rate / trl_rate:.2f}x | {step} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
