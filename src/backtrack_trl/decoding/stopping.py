"""A generate-compatible stopping criterion: each row stops on ``<backtrack>``, on EOS, or after ``Goal Reached!``.

It returns one bool per row and carries an ``eos_token_id`` attribute, which is what makes ``model.generate`` pad
the rows that stopped (with the generation config's ``pad_token_id``) while the others keep going.

Usage:

```python
from transformers import StoppingCriteriaList

from backtrack_trl.decoding import BacktrackStoppingCriteria

criteria = BacktrackStoppingCriteria.from_tokenizer(tokenizer)
out = model.generate(**inputs, stopping_criteria=StoppingCriteriaList([criteria]), do_sample=True, max_new_tokens=64)
```
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import StoppingCriteria

from backtrack_trl.decoding.tokens import TaskTokens


class BacktrackStoppingCriteria(StoppingCriteria):
    """Stop a row once its last token is ``<backtrack>`` or an EOS id, or its last tokens spell the goal marker.

    Args:
        backtrack_token_id: id of ``<backtrack>``.
        eos_token_id: one id or several.
        goal_token_ids: the tokens of ``"Goal Reached!"`` (as ``tokenizer(GOAL_MARKER, add_special_tokens=False)``
            gives them); empty to never stop on the marker.
        stop_on_backtrack: set False to let rows continue after ``<backtrack>`` (e.g. in-context backtracking).
        tokens: the tokenizer's :class:`TaskTokens`; with it a row also stops when its text ends with the marker
            through other tokens (a merged ``"!\\n"``, as Llama-3's tokenizer has). ``from_tokenizer`` passes it.
    """

    def __init__(
        self,
        backtrack_token_id: int,
        eos_token_id: int | Sequence[int],
        goal_token_ids: Sequence[int] = (),
        stop_on_backtrack: bool = True,
        tokens: TaskTokens | None = None,
    ):
        eos = [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id)
        # The attribute name matters: generate pads finished rows only when a criterion has `eos_token_id`.
        self.eos_token_id = eos
        self.backtrack_token_id = int(backtrack_token_id)
        self.goal_token_ids = [int(i) for i in goal_token_ids]
        self.stop_on_backtrack = stop_on_backtrack
        self.tokens = tokens

    @classmethod
    def from_tokenizer(cls, tokenizer, **kwargs) -> BacktrackStoppingCriteria:
        tokens = TaskTokens.from_tokenizer(tokenizer)
        return cls(tokens.backtrack_id, list(tokens.eos_ids), tokens.goal_ids, tokens=tokens, **kwargs)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor | None = None, **kwargs) -> torch.Tensor:
        last = input_ids[:, -1]
        done = torch.isin(last, torch.tensor(self.eos_token_id, device=last.device))
        if self.stop_on_backtrack:
            done |= last == self.backtrack_token_id
        width = len(self.goal_token_ids)
        if width and input_ids.shape[1] >= width:
            goal = torch.tensor(self.goal_token_ids, device=input_ids.device)
            done |= (input_ids[:, -width:] == goal).all(dim=-1)
        if self.tokens is not None:
            done |= self.tokens.goal_rows(~done, input_ids)
        return done
