"""KV-cache surgery for the batched search: keep the shared prefix of a rolled-back row instead of re-encoding it.

Layout used throughout: a batch of rows is left-padded; row ``i`` holds its real tokens in the last ``valid[i]``
cache slots and an attention mask of 0 on the slots before them. Keys are cached after RoPE, so moving a row's
slots to another column does not change what attention computes as long as the mask and the ``position_ids`` of
new tokens are right (the search passes both).

Usage:

```python
from backtrack_trl.decoding.cache_ops import KVSlice, extract_slots, stack_slices

piece = extract_slots(cache, row=3, start=pad, length=12)  # a row's first 12 real slots
cache, mask = stack_slices([piece, other_piece], config=model.config)  # a new left-padded cache
```
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer


@dataclass
class KVSlice:
    """The cached keys/values of one row's first ``length`` real slots: one ``(keys, values)`` per layer, each
    of shape ``(heads, length, head_dim)``."""

    layers: list[tuple[torch.Tensor, torch.Tensor]]
    length: int


def supports_surgery(cache) -> bool:
    """True when every layer is a plain ``DynamicLayer`` (full attention), whose slots we can gather and pad."""
    return isinstance(cache, DynamicCache) and all(type(layer) is DynamicLayer for layer in cache.layers)


def select_rows(cache: DynamicCache, index: torch.Tensor) -> None:
    """Keep only the rows ``index`` (in place)."""
    cache.batch_select_indices(index)


def trim_left(cache: DynamicCache, columns: int) -> None:
    """Drop the first ``columns`` slots of every row (in place); used when those slots are padding in all rows."""
    if columns <= 0:
        return
    for layer in cache.layers:
        if layer.is_initialized and layer.keys.numel():
            layer.keys = layer.keys[..., columns:, :]
            layer.values = layer.values[..., columns:, :]


def extract_slots(cache: DynamicCache, row: int, start: int, length: int) -> KVSlice:
    """Copy slots ``start .. start + length`` of ``row`` (copies, so the big batch tensors can be freed)."""
    layers = []
    for layer in cache.layers:
        if length == 0 or not layer.is_initialized or not layer.keys.numel():
            layers.append((None, None))
            continue
        keys = layer.keys[row, :, start : start + length].clone()
        values = layer.values[row, :, start : start + length].clone()
        layers.append((keys, values))
    return KVSlice(layers=layers, length=length)


def stack_slices(slices: list[KVSlice], config=None) -> tuple[DynamicCache, torch.Tensor]:
    """Build a left-padded cache from row slices; returns the cache and its ``(rows, width)`` attention mask."""
    width = max(piece.length for piece in slices)
    mask = torch.zeros(len(slices), width, dtype=torch.long)
    for row, piece in enumerate(slices):
        mask[row, width - piece.length :] = 1
    if width == 0:
        return DynamicCache(config=config), mask
    num_layers = len(slices[0].layers)
    reference = next(piece for piece in slices if piece.length)
    data = []
    for layer_index in range(num_layers):
        ref_keys, ref_values = reference.layers[layer_index]
        if ref_keys is None:
            data.append((None, None))
            continue
        heads, _, key_dim = ref_keys.shape
        value_dim = ref_values.shape[-1]
        keys = ref_keys.new_zeros(len(slices), heads, width, key_dim)
        values = ref_values.new_zeros(len(slices), heads, width, value_dim)
        for row, piece in enumerate(slices):
            if piece.length:
                piece_keys, piece_values = piece.layers[layer_index]
                keys[row, :, width - piece.length :] = piece_keys
                values[row, :, width - piece.length :] = piece_values
        data.append((keys, values))
    cache = DynamicCache(ddp_cache_data=data, config=config)
    return cache, mask.to(reference.layers[0][0].device if reference.layers[0][0] is not None else "cpu")
