"""The token ids every decoder needs, resolved once from a tokenizer (and checked against a model).

Usage:

```python
from backtrack_trl.decoding.tokens import TaskTokens
from backtrack_trl.tasks.tokenizer import build_countdown_tokenizer

tokenizer = build_countdown_tokenizer()
tokens = TaskTokens.from_tokenizer(tokenizer)
assert tokens.is_newline(tokenizer.convert_tokens_to_ids("\\n"))
assert tokens.backtrack_id == tokenizer.convert_tokens_to_ids("<backtrack>")
```
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field

import torch

from backtrack_trl.tasks.base import GOAL_MARKER
from backtrack_trl.tasks.tokenizer import require_backtrack_token


# Decoding every id is expensive for 128k-token vocabularies: do it once per tokenizer object.
_TOKEN_TEXTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def token_texts(tokenizer) -> tuple[str, ...]:
    """The text of every id of ``tokenizer`` (specials included), decoded one id at a time."""
    try:
        cached = _TOKEN_TEXTS.get(tokenizer)
    except TypeError:  # not weak-referenceable
        cached = None
    if cached is not None:
        return cached
    texts = tuple(tokenizer.batch_decode([[i] for i in range(len(tokenizer))], skip_special_tokens=False))
    try:
        _TOKEN_TEXTS[tokenizer] = texts
    except TypeError:
        pass
    return texts


@dataclass(frozen=True)
class TaskTokens:
    """Ids of the task's special tokens for one tokenizer.

    - ``backtrack_id``: ``<backtrack>``; ``eos_ids``: EOS (and any extra ids the model config lists as EOS);
    - ``goal_ids``: the tokens of ``"Goal Reached!"`` (a row whose response ends with them has finished);
    - ``newline_mask[id]``: the token's text ends with ``"\\n"``; a line (a step) ends after such a token;
    - ``blank_ids``: tokens that are only whitespace (``"\\n"``, ``"\\n\\n"``, ``" "``): an empty line is not a step;
    - ``strip_ids``: bos/eos/pad, removed from outputs before decoding (``<backtrack>`` is kept).

    Tokenizers that merge a newline into its neighbours (Llama-3's ``!\\n``, `` =\\n``, ``\\n\\n``) are handled by
    text: a row has reached the goal when its text, trailing whitespace removed, ends with ``Goal Reached!``
    (:meth:`ends_with_goal`), whether or not the marker's last token also carries a newline.
    """

    backtrack_id: int
    eos_ids: tuple[int, ...]
    pad_id: int
    bos_id: int | None
    goal_ids: tuple[int, ...]
    vocab_size: int
    newline_mask: torch.Tensor = field(repr=False, compare=False)
    strip_ids: frozenset = field(default_factory=frozenset)
    newline_ids: frozenset = field(default_factory=frozenset, repr=False, compare=False)
    blank_ids: frozenset = field(default_factory=frozenset, repr=False, compare=False)
    goal_end_ids: frozenset = field(default_factory=frozenset, repr=False, compare=False)
    goal_end_mask: torch.Tensor | None = field(default=None, repr=False, compare=False)
    texts: tuple = field(default=(), repr=False, compare=False)

    @classmethod
    def from_tokenizer(cls, tokenizer, model=None) -> TaskTokens:
        """Resolve the ids; with ``model``, also check that its vocabulary covers the tokenizer's."""
        backtrack_id = require_backtrack_token(tokenizer)  # ValueError naming the tokenizer and the fix
        if tokenizer.eos_token_id is None:
            raise ValueError(
                f"The tokenizer {tokenizer.name_or_path or '<in memory>'!r} has no EOS token; set tokenizer.eos_token."
            )
        eos_ids = [tokenizer.eos_token_id]
        if model is not None:
            check_vocab(model, tokenizer)
            config_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
            for extra in config_eos if isinstance(config_eos, (list, tuple)) else [config_eos]:
                if extra is not None and extra not in eos_ids and extra != backtrack_id:
                    eos_ids.append(int(extra))
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        goal_ids = tuple(tokenizer(GOAL_MARKER, add_special_tokens=False)["input_ids"])
        strip = {i for i in (tokenizer.bos_token_id, pad_id, *eos_ids) if i is not None}
        texts = token_texts(tokenizer)
        newline_mask = torch.tensor([text.endswith("\n") for text in texts], dtype=torch.bool)
        # Ids that can end the marker: their text, trailing whitespace removed, ends with the marker's last character.
        goal_end = torch.tensor([text.rstrip()[-1:] == GOAL_MARKER[-1] for text in texts], dtype=torch.bool)
        return cls(
            backtrack_id=backtrack_id,
            eos_ids=tuple(eos_ids),
            pad_id=pad_id,
            bos_id=tokenizer.bos_token_id,
            goal_ids=goal_ids,
            vocab_size=len(tokenizer),
            newline_mask=newline_mask,
            strip_ids=frozenset(strip),
            newline_ids=frozenset(newline_mask.nonzero().flatten().tolist()),
            blank_ids=frozenset(i for i, text in enumerate(texts) if text and not text.strip()),
            goal_end_ids=frozenset(goal_end.nonzero().flatten().tolist()),
            goal_end_mask=goal_end,
            texts=texts,
        )

    def is_newline(self, token_id: int) -> bool:
        return token_id in self.newline_ids

    def is_blank(self, token_id: int) -> bool:
        return token_id in self.blank_ids

    def ends_with_goal(self, ids) -> bool:
        """True if the text of ``ids`` ends with ``Goal Reached!`` (trailing whitespace, e.g. a merged ``!\\n``, ignored)."""
        if not ids or int(ids[-1]) not in self.goal_end_ids:
            return False
        tail = "".join(self.texts[int(i)] for i in ids[-len(GOAL_MARKER) :])
        return tail.rstrip().endswith(GOAL_MARKER)

    def goal_end_mask_on(self, device) -> torch.Tensor:
        """:attr:`goal_end_mask` on ``device``, copied there once (not once per decoding step)."""
        device = torch.device(device)
        if self.goal_end_mask.device == device:
            return self.goal_end_mask
        copies = self.__dict__.setdefault("_goal_end_masks", {})  # frozen dataclass: a cache beside the fields
        if device not in copies:
            copies[device] = self.goal_end_mask.to(device)
        return copies[device]

    def goal_rows(self, rows: torch.Tensor, histories: torch.Tensor) -> torch.Tensor:
        """Bool per row of ``histories`` (generated ids, one row each): among ``rows``, those whose text now ends
        with the goal marker. The text is looked at only for rows whose last token can end it."""
        found = torch.zeros_like(rows)
        last = histories[:, -1]
        mask = self.goal_end_mask_on(histories.device)
        # Ids past the tokenizer (a padded vocabulary) cannot end the marker.
        maybe = rows & (last < mask.numel()) & mask[last.clamp(max=mask.numel() - 1)]
        for row in maybe.nonzero().flatten().tolist():
            found[row] = self.ends_with_goal(histories[row, -len(GOAL_MARKER) :].tolist())
        return found


def stock_generate(model, **kwargs):
    """``model.generate`` of the model's class: a folder loaded with ``trust_remote_code=True`` replaces the instance's
    ``generate`` with our search (``custom_generate/``), which the decoders' own generate calls must not re-enter."""
    return type(model).generate(model, **kwargs)


def check_vocab(model, tokenizer) -> None:
    """Raise a ValueError when the model's embedding matrix has fewer rows than the tokenizer has tokens."""
    embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    rows = getattr(embeddings, "num_embeddings", None) or getattr(model.config, "vocab_size", None)
    if rows is not None and rows < len(tokenizer):
        raise ValueError(
            f"The model {getattr(model, 'name_or_path', '') or type(model).__name__!r} has a vocabulary of {rows} "
            f"tokens but the tokenizer {tokenizer.name_or_path or '<in memory>'!r} has {len(tokenizer)}: they do not "
            "belong together. Load the tokenizer saved with the model, or run "
            "backtrack_trl.training.tokenizers.add_backtrack_token(tokenizer, model) to resize the embeddings."
        )
