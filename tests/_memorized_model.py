"""A tiny Countdown model trained in seconds to (partly) memorise the solutions of a few problems, so that searches,
harvests and engines have something real to find: some problems solved, some not."""

from __future__ import annotations

import random
from pathlib import Path

import torch

from backtrack_trl.tasks import get_task
from backtrack_trl.tasks.tokenizer import build_countdown_tokenizer
from backtrack_trl.training.model_init import init_tiny_llama, save_model_and_tokenizer


def memorized_countdown_model(
    folder: Path, problems, steps: int = 60, seed: int = 0, backtrack_rows: bool = False
) -> Path:
    """Train a 2-layer, 64-wide Llama on the solver's paths of ``problems`` for ``steps`` full-batch steps; save it.

    ``backtrack_rows`` adds one backtrack row per problem (a computational slip, then ``<backtrack>``), so the model
    samples ``<backtrack>`` and a search rolls back; without them it does so only by chance."""
    task = get_task("countdown")
    tokenizer = build_countdown_tokenizer()
    model = init_tiny_llama(tokenizer, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                            num_attention_heads=2, seed=seed)  # fmt: skip
    rows = [task.optimal_row(p, task.solve(p)) for p in problems]
    if backtrack_rows:
        rng = random.Random(seed)
        for problem in problems:
            prefix, wrong = task.make_backtrack_example(problem, task.solve(problem), "computational", rng)
            rows.append(task.backtrack_row(problem, prefix, wrong, "computational"))
    batch = tokenizer([r["prompt"] + r["completion"] + tokenizer.eos_token for r in rows], return_tensors="pt",
                      padding=True)  # fmt: skip
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    torch.manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        model(**batch, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    save_model_and_tokenizer(model.eval(), tokenizer, folder)
    return folder
