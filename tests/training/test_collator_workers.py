"""The collator's counters survive DataLoader worker processes."""

from __future__ import annotations

import torch


def test_collator_counters_survive_dataloader_workers():
    from _training_utils import sample_rows

    from backtrack_trl.tasks.tokenizer import build_countdown_tokenizer
    from backtrack_trl.training.collator import BacktrackMaskingCollator

    rows = sample_rows(6)  # 12 rows
    # max_length=10 cuts every example inside its prompt: all are truncated and none has a trained token.
    collator = BacktrackMaskingCollator(build_countdown_tokenizer(), max_length=10)
    loader = torch.utils.data.DataLoader(rows, batch_size=4, num_workers=2, collate_fn=collator)
    assert sum(len(batch["input_ids"]) for batch in loader) == 12
    # The recipes' dataloader_num_workers: 2 ran the collator in the workers; the main process read 0 before.
    assert (collator.num_examples, collator.num_truncated, collator.num_untrained) == (12, 12, 12)
    collator([rows[0]])  # and in the main process, added to the same totals
    assert (collator.num_examples, collator.num_truncated, collator.num_untrained) == (13, 13, 13)
