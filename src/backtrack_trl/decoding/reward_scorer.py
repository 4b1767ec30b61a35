"""Outcome reward model (ORM) scoring for best-of-N: a sequence-classification head's scalar on prompt + response.

The ORM is a folder written by ``recipes/reward_model.py`` (TRL's ``RewardTrainer``: ``AutoModelForSequenceClassification``
with ``num_labels=1``). It scores the text it was trained on: ``prompt + response + EOS``, tokenized with the special
tokens (BOS), right-padded; the head reads the last non-pad token.

Usage:

```python
from backtrack_trl.decoding import BestOfNDecoder
from backtrack_trl.decoding.reward_scorer import RewardModelScorer

scorer = RewardModelScorer.from_folder("results/countdown-tiny/reward-model")  # ValueError if it has no score head
scores = scorer.score(["###Question: numbers [5, 3]->target 8\\n###Response:\\n"], ["5+3=8\\nGoal Reached!"])
decoder = BestOfNDecoder(model, tokenizer, n=8, reward_model="results/countdown-tiny/reward-model")
```

Hook for tests and custom scorers: ``reward_model=`` also accepts any object with
``score(prompts: list[str], responses: list[str]) -> list[float]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch


def _bad_folder(folder: str, why: str) -> ValueError:
    return ValueError(
        f"reward_model={folder!r}: {why}. It must be a sequence-classification model with one label (a folder "
        f"written by recipes/reward_model.py --stage train, i.e. AutoModelForSequenceClassification with num_labels=1)."
    )


def check_reward_folder(folder: str) -> None:
    """Cheap check of an ORM folder from its config alone (no weights loaded): one ValueError naming the folder."""
    from transformers import AutoConfig

    if not Path(folder).is_dir():
        raise _bad_folder(folder, "no such folder")
    try:
        config = AutoConfig.from_pretrained(folder)
    except (OSError, ValueError) as error:
        raise _bad_folder(folder, f"no loadable config ({error})") from None
    architectures = getattr(config, "architectures", None) or []
    if not any(name.endswith("ForSequenceClassification") for name in architectures):
        raise _bad_folder(folder, f"its architectures are {architectures} (no score head; a causal LM is not an ORM)")
    if getattr(config, "num_labels", None) != 1:
        raise _bad_folder(folder, f"it has num_labels={config.num_labels}, not one scalar reward")


class RewardModelScorer:
    """Scores responses with a sequence-classification model (``logits[:, 0]``), in batches, on ``device``."""

    def __init__(self, model, tokenizer, batch_size: int = 64, device=None):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        if device is not None:
            self.model.to(device)
        # The head reads the last non-pad token, so the config must know the pad id (TRL sets it while training).
        if getattr(self.model.config, "pad_token_id", None) is None:
            self.model.config.pad_token_id = tokenizer.pad_token_id

    @classmethod
    def from_folder(cls, folder: str, device=None, dtype=None, batch_size: int = 64) -> RewardModelScorer:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        check_reward_folder(folder)
        kwargs = {"dtype": dtype} if dtype is not None else {}
        model = AutoModelForSequenceClassification.from_pretrained(folder, **kwargs)
        return cls(model, AutoTokenizer.from_pretrained(folder), batch_size=batch_size, device=device)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
        """One scalar per (prompt, response): the text ``RewardTrainer`` trained on, prompt + response + EOS."""
        eos = self.tokenizer.eos_token or ""
        texts = [prompt + response + eos for prompt, response in zip(prompts, responses, strict=True)]
        scores: list[float] = []
        for start in range(0, len(texts), self.batch_size):
            batch = self.tokenizer(
                texts[start : start + self.batch_size], return_tensors="pt", padding=True, padding_side="right"
            ).to(self.device)
            logits = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            scores.extend(float(value) for value in logits[:, 0].float().cpu())
        return scores
