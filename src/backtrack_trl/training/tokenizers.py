"""Adding ``<backtrack>`` to any (pretrained) tokenizer and initialising its model's new embedding rows: training's
side of tokenization. Task tokenizers and the token lookups decoders need are in :mod:`backtrack_trl.tasks.tokenizer`.

Usage:

```python
from backtrack_trl.tasks.tokenizer import build_countdown_tokenizer, require_backtrack_token
from backtrack_trl.training.tokenizers import add_backtrack_token

tokenizer = build_countdown_tokenizer()
assert add_backtrack_token(tokenizer) == require_backtrack_token(tokenizer)  # idempotent: nothing changes
```

For an existing tokenizer (e.g. Llama-3.2) and its model::

    tokenizer = AutoTokenizer.from_pretrained("meta-llama/Llama-3.2-1B")
    model = AutoModelForCausalLM.from_pretrained("meta-llama/Llama-3.2-1B")
    add_backtrack_token(tokenizer, model, pad_to_multiple_of=64)  # 128,257 tokens; 128,320 rows (mean-initialised)
"""

from __future__ import annotations

import torch
from transformers import PreTrainedTokenizerBase

from backtrack_trl.tasks.frame import BACKTRACK_TOKEN
from backtrack_trl.tasks.tokenizer import PAD_TOKEN, require_backtrack_token, single_token_id


# Pad tokens that Llama-3.x tokenizers already reserve; used before adding a new "<pad>" (see add_backtrack_token).
RESERVED_PAD_TOKENS = ("<|finetune_right_pad_id|>",)


def mean_init_rows(weight: torch.Tensor, old_rows: int) -> None:
    """Set rows ``old_rows:`` of an embedding / LM head matrix to the mean of the existing rows."""
    if weight.shape[0] > old_rows:
        with torch.no_grad():
            weight[old_rows:] = weight[:old_rows].mean(dim=0, keepdim=True).to(weight.dtype)


def add_backtrack_token(tokenizer: PreTrainedTokenizerBase, model=None, pad_to_multiple_of: int | None = None) -> int:
    """Add ``<backtrack>`` (and a pad token if missing) to ``tokenizer`` and resize ``model``; return the token id.

    - ``<backtrack>`` becomes an additional special token (one id, never split).
    - Pad token, when the tokenizer has none: a reserved pad token of the vocabulary if there is one
      (``<|finetune_right_pad_id|>`` for Llama-3.x), else a new ``<pad>`` special token. EOS is deliberately not
      reused as pad: the training side masks padding and must still learn to emit EOS, and decoders strip pad
      tokens from outputs.
    - ``model`` (optional): if the tokenizer grew past the embedding matrix, the input embeddings (and the LM head
      if untied) are resized and the new rows set to the mean of the old rows (the usual recipe for new tokens:
      the new token starts with an average logit instead of a random one). ``config.pad_token_id`` and the
      generation config's pad id are set when they were unset. ``pad_to_multiple_of`` rounds the new row count up
      (the SFT recipe and ``init_model`` use 64); the decoders never sample the ids past ``len(tokenizer)``.
    - Idempotent: a second call changes nothing and returns the same id.
    """
    if single_token_id(tokenizer, BACKTRACK_TOKEN) is None:
        tokenizer.add_special_tokens({"extra_special_tokens": [BACKTRACK_TOKEN]}, replace_extra_special_tokens=False)
    if tokenizer.pad_token is None:
        reserved = [token for token in RESERVED_PAD_TOKENS if single_token_id(tokenizer, token) is not None]
        tokenizer.add_special_tokens({"pad_token": reserved[0] if reserved else PAD_TOKEN})
    token_id = require_backtrack_token(tokenizer)

    if model is not None:
        input_embeddings = model.get_input_embeddings()
        old_rows = input_embeddings.weight.shape[0]
        if len(tokenizer) > old_rows:
            output_embeddings = model.get_output_embeddings()
            tied = output_embeddings is not None and output_embeddings.weight is input_embeddings.weight
            model.resize_token_embeddings(len(tokenizer), pad_to_multiple_of=pad_to_multiple_of, mean_resizing=False)
            mean_init_rows(model.get_input_embeddings().weight, old_rows)
            if not tied and model.get_output_embeddings() is not None:
                mean_init_rows(model.get_output_embeddings().weight, old_rows)
                bias = getattr(model.get_output_embeddings(), "bias", None)
                if bias is not None:
                    mean_init_rows(bias.unsqueeze(-1), old_rows)
        if getattr(model.config, "pad_token_id", None) is None:
            model.config.pad_token_id = tokenizer.pad_token_id
        generation_config = getattr(model, "generation_config", None)
        if generation_config is not None and generation_config.pad_token_id is None:
            generation_config.pad_token_id = tokenizer.pad_token_id
    return token_id
