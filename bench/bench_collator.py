"""Benchmark: cost of BacktrackMaskingCollator inside SFT steps, against TRL's default collator.

Two SFTTrainer runs on the same rows, same model (the CPU default size: recipes/countdown-tiny/init_model.yaml),
same batch, hence the same token count per step:

- "backtrack collator": raw contract rows, tokenized and masked on the fly by BacktrackMaskingCollator;
- "TRL default collator": the same ids and labels pre-tokenized into the dataset, padded by TRL's
  DataCollatorForLanguageModeling (no tokenization at all in the loop).

The collator call is also timed alone, with its default segment memo and without it (``cache_size=0``: every
segment tokenized, the cost of a first epoch over unseen rows).

It prints a markdown table: median step time of each run (data loading + collation + forward/backward/optimizer),
the median time the run's dataloader takes to hand over one batch (Arrow rows -> collated tensors), the time one
collator call takes on its own, and that time as a share of the step. Target: <= 3 %.

Usage:

    python bench/bench_collator.py               # batch 64, 2 alternating rounds of 60 timed steps
    python bench/bench_collator.py --steps 100 --batch_size 32
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time


os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
import yaml  # noqa: E402
from datasets import Dataset  # noqa: E402
from transformers import TrainerCallback  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402
from trl import SFTConfig, SFTTrainer  # noqa: E402

from backtrack_trl.data.build_config import BuildDatasetArguments  # noqa: E402
from backtrack_trl.data.builder import build_dataset  # noqa: E402
from backtrack_trl.tasks.countdown import CountdownConfig  # noqa: E402
from backtrack_trl.tasks.tokenizer import build_countdown_tokenizer  # noqa: E402
from backtrack_trl.training.collator import BacktrackMaskingCollator, build_examples  # noqa: E402
from backtrack_trl.training.model_init import init_tiny_llama  # noqa: E402


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL_KEYS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads")


class StepTimer(TrainerCallback):
    """Wall time between consecutive step ends: one full iteration (fetch + collate + forward/backward/step)."""

    def __init__(self):
        self.stamps = []

    def on_step_end(self, args, state, control, **kwargs):
        self.stamps.append(time.perf_counter())

    def step_times(self, skip: int) -> list[float]:
        return [b - a for a, b in zip(self.stamps[skip:], self.stamps[skip + 1 :])]


def run(model_cfg: dict, tokenizer, dataset, collator, steps: int, batch_size: int, warmup: int):
    """Median step time of a short SFT run, and median time to get one batch from its train dataloader."""
    model = init_tiny_llama(tokenizer, **model_cfg)
    with tempfile.TemporaryDirectory() as out:
        args = SFTConfig(
            out,
            use_cpu=True,
            bf16=False,
            activation_checkpointing=False,
            max_steps=steps + warmup + 1,
            per_device_train_batch_size=batch_size,
            learning_rate=2e-3,
            save_strategy="no",
            report_to="none",
            logging_steps=10_000,
            disable_tqdm=True,
            dataloader_num_workers=0,  # collation runs in the training loop, so it is inside the step time
            remove_unused_columns=collator is None,
            dataset_kwargs={"skip_prepare_dataset": True},
            max_length=128,
        )
        timer = StepTimer()
        trainer = SFTTrainer(
            model=model,
            args=args,
            train_dataset=dataset,
            data_collator=collator,
            processing_class=tokenizer,
            callbacks=[timer],
        )
        trainer.train()
        # The data pipeline alone (Arrow rows -> collated tensors), as the training loop runs it.
        loader, fetch = iter(trainer.get_train_dataloader()), []
        for _ in range(steps):
            start = time.perf_counter()
            next(loader)
            fetch.append(time.perf_counter() - start)
    return statistics.median(timer.step_times(warmup)), statistics.median(fetch)


def time_collator(collator, rows: list[dict], batch_size: int, repeats: int = 50) -> float:
    batches = [rows[i : i + batch_size] for i in range(0, len(rows) - batch_size + 1, batch_size)]
    times = []
    for i in range(repeats):
        batch = batches[i % len(batches)]
        start = time.perf_counter()
        collator(batch)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=60, help="timed steps per run")
    parser.add_argument("--warmup", type=int, default=5, help="untimed first steps")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2, help="alternating runs of each setup (best median kept)")
    parser.add_argument("--model_config", default=os.path.join(ROOT, "recipes/countdown-tiny/init_model.yaml"))
    args = parser.parse_args()
    hf_logging.set_verbosity_error()

    with open(args.model_config) as f:
        model_cfg = {k: v for k, v in yaml.safe_load(f).items() if k in MODEL_KEYS}
    tokenizer = build_countdown_tokenizer()
    n_rows = (args.steps + args.warmup + 2) * args.batch_size
    data_args = BuildDatasetArguments(
        output_dir=tempfile.mkdtemp(), num_train_questions=n_rows // 2 + 1, num_test=10, num_proc=1
    )
    config = CountdownConfig(num_numbers=3, max_number=20, min_target=1, max_target=100)
    rows = build_dataset(data_args, config)["train"].select(range(n_rows)).to_list()
    raw = Dataset.from_list(rows)
    examples = build_examples(rows, tokenizer, max_length=128)
    pretokenized = Dataset.from_list(examples)
    collator = BacktrackMaskingCollator(tokenizer, max_length=128)  # default segment memo (cache_size=200_000)

    # Alternate the two setups (and their order) and keep each one's best medians: load from other processes on
    # the machine then inflates both alike instead of whichever ran during a busy moment.
    best = {"ours": (float("inf"), float("inf")), "trl": (float("inf"), float("inf"))}
    setups = {"ours": (raw, collator), "trl": (pretokenized, None)}
    for round_index in range(args.rounds):
        for name in ("ours", "trl") if round_index % 2 == 0 else ("trl", "ours"):
            step, fetch = run(model_cfg, tokenizer, *setups[name], args.steps, args.batch_size, args.warmup)
            best[name] = (min(best[name][0], step), min(best[name][1], fetch))
    (ours, ours_fetch), (trl_default, trl_fetch) = best["ours"], best["trl"]
    collate = time_collator(BacktrackMaskingCollator(tokenizer, max_length=128), rows, args.batch_size)
    collate_cold = time_collator(
        BacktrackMaskingCollator(tokenizer, max_length=128, cache_size=0), rows, args.batch_size
    )
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    default_collate = time_collator(
        DataCollatorForLanguageModeling(pad_token_id=tokenizer.pad_token_id), examples, args.batch_size
    )
    tokens = sum(len(ex["input_ids"]) for ex in examples) / len(examples) * args.batch_size

    n_params = sum(p.numel() for p in init_tiny_llama(tokenizer, **model_cfg).parameters())
    print(
        f"\nSFT step time, CPU ({torch.get_num_threads()} threads), {n_params / 1e6:.2f}M-parameter Llama, "
        f"batch {args.batch_size} (~{tokens:.0f} tokens), best of {args.rounds} medians of {args.steps} steps\n"
    )
    print(
        "| collator | input | step time (ms) | data pipeline per step (ms) | collator call (ms) | collator share of step |"
    )
    print("|---|---|---|---|---|---|")
    print(
        f"| BacktrackMaskingCollator | raw rows (tokenized + masked per batch) | {ours * 1e3:.1f} | "
        f"{ours_fetch * 1e3:.2f} | {collate * 1e3:.2f} | {collate / ours:.1%} |"
    )
    print(
        f"| BacktrackMaskingCollator, no segment memo (`cache_size=0`) | raw rows | - | - | {collate_cold * 1e3:.2f} | "
        f"{collate_cold / ours:.1%} |"
    )
    print(
        f"| TRL DataCollatorForLanguageModeling | pre-tokenized ids + labels | {trl_default * 1e3:.1f} | "
        f"{trl_fetch * 1e3:.2f} | {default_collate * 1e3:.2f} | {default_collate / trl_default:.1%} |"
    )
    print(
        f"\nExtra data-pipeline time per step with the backtrack collator: {(ours_fetch - trl_fetch) * 1e3:+.2f} ms "
        f"({(ours_fetch - trl_fetch) / trl_default:+.1%} of a step); target: collator share <= 3%. Step times of two "
        "runs also differ by machine noise."
    )


if __name__ == "__main__":
    main()
