"""Generate-compatible logits processors that govern ``<backtrack>``.

- :class:`BacktrackBudgetLogitsProcessor` forbids ``<backtrack>`` in a row once the row's budget is spent.
- :class:`TabuLogitsProcessor` ("tabu"): at a state reached by rolling back, it forbids re-sampling the start of a
  step that was rolled back there. Exactly what is forbidden: with ``tabu_tokens = k``, any continuation whose first
  ``k`` tokens equal the first ``k`` tokens of a forbidden step (the whole step if it is shorter). It is enforced
  by banning, at new-token position ``k - 1``, the forbidden step's token ``k - 1`` when the ``k - 1`` tokens
  generated so far equal that step's first ``k - 1`` tokens. ``k = 1`` (default) bans the first token of the rolled-back step (with the task tokenizer: its first
  character; with Llama-3 tokenizers: its first operand); larger ``k`` bans a longer prefix. Banning a whole line
  (``k`` = the line's length) would only ban its newline and push the model into writing a longer number, so it
  is not the default.

Both work with plain ``model.generate`` (they see ``input_ids`` of shape ``(batch, length)``) and are used by the
self-backtracking search through the same functions.

Usage:

```python
from transformers import LogitsProcessorList

from backtrack_trl.decoding import BacktrackBudgetLogitsProcessor, TabuLogitsProcessor

budget = BacktrackBudgetLogitsProcessor(backtrack_token_id, max_backtracks=0)  # never emit <backtrack>
tabu = TabuLogitsProcessor(forbidden=[[wrong_step_ids]], start=inputs["input_ids"].shape[1])
out = model.generate(**inputs, logits_processor=LogitsProcessorList([budget, tabu]), do_sample=True)
```
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import LogitsProcessor


def ban_backtrack(scores: torch.Tensor, backtrack_token_id: int, rows: torch.Tensor) -> torch.Tensor:
    """Set the ``<backtrack>`` score to -inf in the rows where ``rows`` (bool, per row) is True (in place)."""
    if rows.any():
        scores[rows, backtrack_token_id] = -float("inf")
    return scores


def tabu_bans(
    generated: torch.Tensor, forbidden: Sequence[Sequence[Sequence[int]]], tabu_tokens: int = 1
) -> list[tuple[int, int]]:
    """(row, token) pairs to ban at the next position.

    ``generated`` holds, per row, the tokens generated since the state (``(rows, j)``); ``forbidden[row]`` the
    rolled-back steps (token ids) of that row's state.
    """
    position = generated.shape[1]
    if position >= tabu_tokens:
        return []
    bans = []
    for row, steps in enumerate(forbidden):
        if not steps:
            continue
        so_far = None
        for step in steps:
            # A step is defined by its first k tokens (all of it when shorter): ban its token k-1 once the tokens
            # before it were generated.
            last = min(tabu_tokens, len(step)) - 1
            if last != position:
                continue
            if so_far is None:
                so_far = generated[row].tolist() if position else []
            if list(step[:last]) == so_far:
                bans.append((row, int(step[last])))
    return bans


class BacktrackBudgetLogitsProcessor(LogitsProcessor):
    """Forbid ``<backtrack>`` once a row has used ``max_backtracks`` of them.

    Args:
        backtrack_token_id: id of ``<backtrack>``.
        max_backtracks: the budget per row (0 forbids the token outright).
        used: backtracks each row already spent before this call (int or one per row; e.g. rollbacks along the
            path of a search state); added to the ``<backtrack>`` tokens counted in ``input_ids[:, start:]``.
        start: first column of ``input_ids`` to count in (default 0: the whole row).
    """

    def __init__(self, backtrack_token_id: int, max_backtracks: int, used: int | Sequence[int] = 0, start: int = 0):
        if max_backtracks < 0:
            raise ValueError(f"max_backtracks must be >= 0, got {max_backtracks}.")
        self.backtrack_token_id = int(backtrack_token_id)
        self.max_backtracks = int(max_backtracks)
        self.used = used
        self.start = int(start)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        count = (input_ids[:, self.start :] == self.backtrack_token_id).sum(dim=-1)
        count = count + torch.as_tensor(self.used, device=count.device)
        return ban_backtrack(scores, self.backtrack_token_id, count >= self.max_backtracks)


class TabuLogitsProcessor(LogitsProcessor):
    """Forbid re-sampling the start of rolled-back steps (see the module docstring for exactly what is banned).

    Args:
        forbidden: per row, the token ids of the steps that were rolled back at this row's state (a row with an
            empty list is unconstrained). One list for the whole batch is broadcast when the batch is larger
            (e.g. ``num_return_sequences``).
        start: column of ``input_ids`` where the new step begins (the length of the prompt + state given to
            ``generate``).
        tabu_tokens: how many leading tokens of a forbidden step define it (default 1).
    """

    def __init__(self, forbidden: Sequence[Sequence[Sequence[int]]], start: int, tabu_tokens: int = 1):
        if tabu_tokens < 1:
            raise ValueError(f"tabu_tokens must be >= 1, got {tabu_tokens}.")
        self.forbidden = [[list(step) for step in steps] for steps in forbidden]
        self.start = int(start)
        self.tabu_tokens = int(tabu_tokens)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        rows = input_ids.shape[0]
        forbidden = self.forbidden
        if len(forbidden) != rows:
            if rows % len(forbidden):
                raise ValueError(f"TabuLogitsProcessor has {len(forbidden)} rows of steps for a batch of {rows}.")
            repeat = rows // len(forbidden)
            forbidden = [steps for steps in forbidden for _ in range(repeat)]
        for row, token in tabu_bans(input_ids[:, self.start :], forbidden, self.tabu_tokens):
            scores[row, token] = -float("inf")
        return scores
