"""Backtrack-masking data collator for TRL's ``SFTTrainer``.

The Self-Backtracking loss trains the correct prefix, ``<backtrack>`` and EOS of a backtrack example but NOT its
wrong step, so the model learns to notice a bad step without learning to make one. The prompt and the padding are
never trained. Rows follow the dataset contract (``prompt``, ``completion``, ``kind``, ``prefix``, ``wrong_step``)::

    prompt      "###Question: numbers [2, 39, 45, 10]->target 62\\n###Response:\\n"      -> masked (-100)
    prefix      "45-39=6\\n"                                                            -> trained
    wrong_step  "39+6=45\\n"                  -> masked (trained with mask_wrong_step=False, or for the error
                                                 types listed in trained_error_types, e.g. ["exploration"])
    <backtrack> </s>                                                                  -> trained

Usage:

```python
from transformers import AutoTokenizer
from trl import SFTConfig, SFTTrainer

from backtrack_trl.training.collator import BacktrackMaskingCollator, build_example

tokenizer = AutoTokenizer.from_pretrained("models/countdown-tiny/init")
row = {
    "prompt": "###Question: numbers [2, 39, 45, 10]->target 62\\n###Response:\\n",
    "completion": "45-39=6\\n39+6=45\\n<backtrack>",
    "kind": "backtrack",
    "prefix": "45-39=6\\n",
    "wrong_step": "39+6=45\\n",
}
example = build_example(row, tokenizer)  # {"input_ids": [...], "labels": [...]} (-100 = no loss)
collator = BacktrackMaskingCollator(tokenizer, max_length=128)
batch = collator([row, row])  # input_ids, attention_mask, labels (LongTensors)
# In SFTTrainer (recipes/sft.py does this for you): raw columns must reach the collator.
args = SFTConfig("out", remove_unused_columns=False, dataset_kwargs={"skip_prepare_dataset": True})
```
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from backtrack_trl.tasks import TASKS, get_task
from backtrack_trl.tasks.base import BACKTRACK_TOKEN
from backtrack_trl.tasks.tokenizer import single_token_id


logger = logging.getLogger(__name__)

IGNORE_INDEX = -100
# Rows of the collator's shared counters: the main process + up to 63 DataLoader workers (more share rows).
_COUNTER_ROWS = 64
REQUIRED_COLUMNS = ("prompt", "completion", "kind", "prefix", "wrong_step")
ROW_KINDS = ("optimal", "backtrack")


def check_columns(column_names: Iterable[str], where: str = "dataset") -> None:
    """Raise a ValueError naming the contract columns missing from ``column_names`` (and the fix)."""
    present = set(column_names)
    missing = [name for name in REQUIRED_COLUMNS if name not in present]
    if missing:
        raise ValueError(
            f"The {where} lacks the column(s) {missing} needed by BacktrackMaskingCollator (it has {sorted(present)}). "
            f"Rows need {list(REQUIRED_COLUMNS)}: build the data with `python recipes/build_dataset.py` (see the "
            "dataset row contract in docs/data.md). If the columns exist but vanish before the collator, set "
            "`remove_unused_columns=False` and `dataset_kwargs={'skip_prepare_dataset': True}` in SFTConfig."
        )


def check_tokenizer(tokenizer: PreTrainedTokenizerBase, needs_backtrack: bool = True) -> int | None:
    """Check the tokenizer has EOS, pad and (when ``needs_backtrack``) a one-token ``<backtrack>``; return its id."""
    name = getattr(tokenizer, "name_or_path", "") or "<in memory>"
    if tokenizer.eos_token_id is None:
        raise ValueError(
            f"The tokenizer {name!r} has no EOS token: the collator appends EOS so the model learns where answers "
            "end. Set one, e.g. `tokenizer.eos_token = '</s>'` (or `eos_token:` in the SFT recipe)."
        )
    if tokenizer.pad_token_id is None:
        raise ValueError(
            f"The tokenizer {name!r} has no pad token. Set one (e.g. `pad_token: <|finetune_right_pad_id|>` in the "
            "SFT recipe for Llama-3.x), or call backtrack_trl.training.tokenizers.add_backtrack_token(tokenizer, model), "
            "which also adds a pad token."
        )
    if not needs_backtrack:
        return None
    backtrack_id = single_token_id(tokenizer, BACKTRACK_TOKEN)  # the one check of tokenization.require_backtrack_token
    if backtrack_id is None:
        encoded = tokenizer(BACKTRACK_TOKEN, add_special_tokens=False)["input_ids"]
        raise ValueError(
            f"The tokenizer {name!r} does not encode {BACKTRACK_TOKEN} as one token (it gives {list(encoded)}) but "
            "the data has backtrack rows. Call backtrack_trl.training.tokenizers.add_backtrack_token(tokenizer, model) "
            "(recipes/sft.py does it for you) before training."
        )
    return backtrack_id


def special_token_layout(tokenizer: PreTrainedTokenizerBase) -> tuple[list[int], list[int]]:
    """Ids that ``tokenizer(text)`` puts before and after the text (e.g. ``([bos], [])`` for Llama, ``([], [])``).

    Found by encoding a probe with and without special tokens, so tokenizers with and without BOS both work.
    """
    probe = "1"
    plain = list(tokenizer(probe, add_special_tokens=False)["input_ids"])
    full = list(tokenizer(probe, add_special_tokens=True)["input_ids"])
    for start in range(len(full) - len(plain) + 1):
        if full[start : start + len(plain)] == plain:
            return full[:start], full[start + len(plain) :]
    raise ValueError(f"Cannot locate the text ids {plain} inside the special-token encoding {full} of {probe!r}.")


def check_trained_error_types(trained_error_types: Iterable[str]) -> frozenset[str]:
    """Validate the error types whose wrong step is trained despite ``mask_wrong_step``; return them as a set."""
    types = frozenset(trained_error_types or ())
    get_task()  # loads the built-in tasks into the registry
    # The collator is task-free: a type is known when some registered task makes it.
    known = list(dict.fromkeys(error for task in TASKS.values() for error in task.error_types))
    unknown = sorted(types - set(known))
    if unknown:
        raise ValueError(
            f"trained_error_types has unknown error type(s) {unknown}; use a subset of the tasks' error types "
            f"{known}, e.g. [exploration] (a legal step that leaves every solution: training it teaches honest "
            "steps that miss)."
        )
    return types


def wrong_step_is_masked(row: Mapping[str, Any], mask_wrong_step: bool, trained_error_types: frozenset[str]) -> bool:
    """Whether the wrong step of a backtrack ``row`` is kept out of the loss (per error type when asked)."""
    if not mask_wrong_step:
        return False
    if not trained_error_types:
        return True
    if "error_type" not in row:
        raise ValueError(
            f"trained_error_types={sorted(trained_error_types)} needs the `error_type` column, which the row with "
            f"prompt {row['prompt']!r} lacks; rebuild the data with recipes/build_dataset.py or drop the option."
        )
    return row["error_type"] not in trained_error_types


def _check_row(row: Mapping[str, Any]) -> str:
    """Validate the row invariants; return the text that follows prefix + wrong_step ('<backtrack>' or '')."""
    kind, completion, prefix, wrong_step = row["kind"], row["completion"], row["prefix"], row["wrong_step"]
    where = f"row with prompt {row['prompt']!r}"
    if kind not in ROW_KINDS:
        raise ValueError(f"The {where} has kind={kind!r}; expected one of {ROW_KINDS}.")
    if kind == "backtrack":
        if not wrong_step:
            raise ValueError(
                f"The backtrack {where} has an empty wrong_step: a backtrack row needs the wrong line (with its "
                "newline) so it can be masked. Rebuild the data with recipes/build_dataset.py."
            )
        if not wrong_step.endswith("\n"):
            raise ValueError(f"The {where} has wrong_step={wrong_step!r}: it must be a whole line ending in '\\n'.")
        if completion != prefix + wrong_step + BACKTRACK_TOKEN:
            raise ValueError(
                f"The backtrack {where} breaks the invariant completion == prefix + wrong_step + {BACKTRACK_TOKEN!r}: "
                f"completion={completion!r}, prefix={prefix!r}, wrong_step={wrong_step!r}."
            )
        return BACKTRACK_TOKEN
    if wrong_step:
        raise ValueError(f"The optimal {where} has wrong_step={wrong_step!r}; optimal rows need wrong_step=''.")
    if completion != prefix:
        raise ValueError(
            f"The optimal {where} breaks the invariant completion == prefix: completion={completion!r}, "
            f"prefix={prefix!r}."
        )
    return ""


class SegmentEncoder:
    """Encode text segments without special tokens, fast: the backend tokenizer's ``encode_batch_fast`` in one call,
    plus an optional memo of segments already seen.

    Per-segment tokenization makes memoising exact (a segment's ids never depend on its neighbours), and Countdown
    segments repeat a lot (the prompt of a question appears in its optimal and backtrack rows, step lines recur),
    so after the first batches most lookups skip the tokenizer. ``max_entries`` bounds the memory (0 disables it).
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, max_entries: int = 200_000):
        self.tokenizer = tokenizer
        self.max_entries = max_entries
        self.cache: dict[str, list[int]] = {}
        backend = getattr(tokenizer, "backend_tokenizer", None) if getattr(tokenizer, "is_fast", False) else None
        self._backend = backend if backend is not None and hasattr(backend, "encode_batch_fast") else None

    def _encode(self, texts: list[str]) -> list[list[int]]:
        if self._backend is not None:
            return [encoding.ids for encoding in self._backend.encode_batch_fast(texts, add_special_tokens=False)]
        encoded = self.tokenizer(texts, add_special_tokens=False, return_attention_mask=False)
        return [list(ids) for ids in encoded["input_ids"]]

    def __call__(self, texts: list[str]) -> list[list[int]]:
        if not self.max_entries:
            return self._encode(texts)
        cache = self.cache
        missing = list(dict.fromkeys(text for text in texts if text not in cache))
        fresh = dict(zip(missing, self._encode(missing))) if missing else {}
        room = self.max_entries - len(cache)
        if room > 0:
            cache.update(fresh if len(fresh) <= room else dict(list(fresh.items())[:room]))
        return [cache[text] if text in cache else fresh[text] for text in texts]


def build_examples(
    rows: Sequence[Mapping[str, Any]],
    tokenizer: PreTrainedTokenizerBase,
    max_length: int | None = None,
    mask_wrong_step: bool = True,
    layout: tuple[list[int], list[int]] | None = None,
    encoder: SegmentEncoder | None = None,
    trained_error_types: Iterable[str] = (),
) -> list[dict[str, list[int]]]:
    """Tokenize contract rows into ``{"input_ids", "labels"}`` lists (unpadded; -100 = no loss).

    Layout: ``[specials before text] + prompt + prefix + wrong_step + tail + [eos]`` where tail is ``<backtrack>`` for
    backtrack rows and empty for optimal ones; specials the tokenizer appends after a text (if any) are dropped since
    EOS closes the sequence.

    Why per-segment tokenization: each of prompt / prefix / wrong_step is encoded on its own and the ids are
    concatenated. A tokenizer whose merges cross a segment edge (a BPE merging "6\\n" with the next digit) can then
    never produce a token that is half prompt or half wrong step, so every label is exactly right by construction
    (no offset arithmetic, no re-tokenized string prefixes). It also matches inference: the decoder encodes the
    prompt alone with ``tokenizer(prompt)`` and the model continues from there, and a rollback drops the wrong
    line at a line boundary, which is where the wrong step segment starts. The price is that the ids can differ
    from ``tokenizer(prompt + completion)`` at the edges, which is the point.

    ``trained_error_types`` (e.g. ``["exploration"]``) trains the wrong step of those error types even when
    ``mask_wrong_step`` is on; the others stay masked.

    ``max_length`` truncates from the end (ids and labels together). All segments of the batch are encoded in one
    call of the fast tokenizer (``encoder``: a :class:`SegmentEncoder`, which may memoise segments).
    """
    if not rows:
        return []
    check_columns(rows[0].keys(), where="batch")
    tails = [_check_row(row) for row in rows]
    trained_types = check_trained_error_types(trained_error_types)
    masked = [
        bool(tail) and wrong_step_is_masked(row, mask_wrong_step, trained_types) for row, tail in zip(rows, tails)
    ]
    backtrack_id = check_tokenizer(tokenizer, needs_backtrack=any(tails))
    prefix_specials, _ = layout if layout is not None else special_token_layout(tokenizer)
    encoder = encoder if encoder is not None else SegmentEncoder(tokenizer, max_entries=0)
    n = len(rows)
    # The tail is "<backtrack>" or "" (checked by _check_row) and check_tokenizer verified "<backtrack>" encodes to
    # exactly [backtrack_id], so only the three text segments go through the tokenizer.
    ids = encoder(
        [row["prompt"] for row in rows] + [row["prefix"] for row in rows] + [row["wrong_step"] for row in rows]
    )
    eos = [tokenizer.eos_token_id]
    examples = []
    for i in range(n):
        prompt_ids = prefix_specials + ids[i]
        prefix_ids, wrong_ids = ids[n + i], ids[2 * n + i]
        tail_ids = [backtrack_id] if tails[i] else []
        wrong_labels = [IGNORE_INDEX] * len(wrong_ids) if masked[i] else wrong_ids
        input_ids = prompt_ids + prefix_ids + wrong_ids + tail_ids + eos
        labels = [IGNORE_INDEX] * len(prompt_ids) + prefix_ids + wrong_labels + tail_ids + eos
        if max_length is not None:
            input_ids, labels = input_ids[:max_length], labels[:max_length]
        examples.append({"input_ids": input_ids, "labels": labels})
    return examples


def build_example(
    row: Mapping[str, Any],
    tokenizer: PreTrainedTokenizerBase,
    max_length: int | None = None,
    mask_wrong_step: bool = True,
    trained_error_types: Iterable[str] = (),
) -> dict[str, list[int]]:
    """Tokenize one contract row into ``{"input_ids", "labels"}`` (see :func:`build_examples`)."""
    return build_examples(
        [row],
        tokenizer,
        max_length=max_length,
        mask_wrong_step=mask_wrong_step,
        trained_error_types=trained_error_types,
    )[0]


@dataclass
class BacktrackMaskingCollator:
    """Collate raw contract rows into padded ``input_ids``, ``attention_mask`` and ``labels`` for SFTTrainer.

    Args:
        tokenizer: a (fast) tokenizer with EOS, pad and, when the data has backtrack rows, ``<backtrack>``.
        max_length: truncate each example to this many tokens (ids and labels together); None keeps everything.
        mask_wrong_step: mask the wrong step of backtrack rows (the paper's loss). False trains it too.
        trained_error_types: error types whose wrong step is trained anyway (e.g. ``("exploration",)``); the rows
            then need the ``error_type`` column.
        pad_to_multiple_of: round the padded length up to a multiple of this.
        padding_side: "right" or "left"; None takes ``tokenizer.padding_side``. With left padding the batch also
            carries ``position_ids`` counting from the first real token, so both sides give the same loss.
        on_untrained: what to do with an example left with no trained token (e.g. truncated inside the prompt):
            "warn" (counted in ``num_untrained`` and logged) or "raise".
        cache_size: how many distinct text segments to memoise (see :class:`SegmentEncoder`; 0 disables it).

    The counters ``num_examples``, ``num_truncated`` and ``num_untrained`` accumulate over calls, including the calls
    made in DataLoader worker processes (``dataloader_num_workers > 0``): they live in a shared-memory tensor with one
    row per worker, so the main process reads the totals (per training process: each rank has its own collator).
    """

    tokenizer: PreTrainedTokenizerBase
    max_length: int | None = None
    mask_wrong_step: bool = True
    trained_error_types: Sequence[str] = ()
    pad_to_multiple_of: int | None = None
    padding_side: str | None = None
    on_untrained: str = "warn"
    cache_size: int = 200_000
    _counts: torch.Tensor = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        if self.padding_side is None:
            self.padding_side = getattr(self.tokenizer, "padding_side", "right") or "right"
        if self.padding_side not in ("left", "right"):
            raise ValueError(f"padding_side={self.padding_side!r}; expected 'left' or 'right'.")
        if self.on_untrained not in ("warn", "raise"):
            raise ValueError(f"on_untrained={self.on_untrained!r}; expected 'warn' or 'raise'.")
        if self.max_length is not None and self.max_length < 1:
            raise ValueError(f"max_length={self.max_length} must be a positive number of tokens (or None).")
        check_tokenizer(self.tokenizer, needs_backtrack=False)
        self.trained_error_types = tuple(sorted(check_trained_error_types(self.trained_error_types)))
        self._layout = special_token_layout(self.tokenizer)
        self._encoder = SegmentEncoder(self.tokenizer, max_entries=self.cache_size)
        # Columns: examples, truncated, untrained. Row 0 is the main process, row 1 + i DataLoader worker i: each
        # process writes only its own row (no lost updates), in shared memory (the workers' writes reach the main
        # process whether they were forked or spawned).
        self._counts = torch.zeros(_COUNTER_ROWS, 3, dtype=torch.int64).share_memory_()

    @property
    def num_examples(self) -> int:
        return int(self._counts[:, 0].sum())

    @property
    def num_truncated(self) -> int:
        return int(self._counts[:, 1].sum())

    @property
    def num_untrained(self) -> int:
        return int(self._counts[:, 2].sum())

    def _count_row(self) -> torch.Tensor:
        worker = torch.utils.data.get_worker_info()
        return self._counts[0 if worker is None else 1 + worker.id % (_COUNTER_ROWS - 1)]

    def __call__(self, rows: list[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        full = build_examples(
            rows,
            self.tokenizer,
            mask_wrong_step=self.mask_wrong_step,
            layout=self._layout,
            encoder=self._encoder,
            trained_error_types=self.trained_error_types,
        )
        counts = self._count_row()
        examples = []
        for example in full:
            if self.max_length is not None and len(example["input_ids"]) > self.max_length:
                counts[1] += 1
                if int(counts[1]) == 1:  # once per process
                    logger.warning(
                        "An example has %d tokens and was truncated to max_length=%d (its end, EOS included, is not "
                        "trained); raise max_length if this happens often (counter: collator.num_truncated).",
                        len(example["input_ids"]),
                        self.max_length,
                    )
                example = {key: value[: self.max_length] for key, value in example.items()}
            examples.append(example)
        counts[0] += len(examples)

        untrained = sum(ex["labels"].count(IGNORE_INDEX) == len(ex["labels"]) for ex in examples)
        if untrained:
            counts[2] += untrained
            message = (
                f"{untrained} of {len(examples)} examples in this batch have no trained token (max_length="
                f"{self.max_length} cuts them inside the prompt); {self.num_untrained} of {self.num_examples} so far. "
                "Raise max_length."
            )
            if self.on_untrained == "raise":
                raise ValueError(message)
            logger.warning(message)
        return self.pad(examples)

    def pad(self, examples: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        """Pad ``{"input_ids", "labels"}`` lists into tensors (pad id / -100 / attention 0 on padding)."""
        lengths = [len(ex["input_ids"]) for ex in examples]
        width = max(lengths)
        if self.pad_to_multiple_of:
            width = -(-width // self.pad_to_multiple_of) * self.pad_to_multiple_of
        pad_id, left = self.tokenizer.pad_token_id, self.padding_side == "left"
        # Pad as Python lists and build each tensor in one call (much cheaper than one tensor per row).
        ids, labels, mask = [], [], []
        for example, length in zip(examples, lengths):
            fill = width - length
            if left:
                ids.append([pad_id] * fill + example["input_ids"])
                labels.append([IGNORE_INDEX] * fill + example["labels"])
                mask.append([0] * fill + [1] * length)
            else:
                ids.append(example["input_ids"] + [pad_id] * fill)
                labels.append(example["labels"] + [IGNORE_INDEX] * fill)
                mask.append([1] * length + [0] * fill)
        attention_mask = torch.tensor(mask, dtype=torch.long)
        out = {
            "input_ids": torch.tensor(ids, dtype=torch.long),
            "attention_mask": attention_mask,
            "labels": torch.tensor(labels, dtype=torch.long),
        }
        if left:
            # Positions count from each row's first real token, as with right padding (matters for models with
            # absolute positions; with RoPE it keeps the numerics identical).
            out["position_ids"] = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        return out
