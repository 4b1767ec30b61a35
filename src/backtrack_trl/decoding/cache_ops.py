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


class BufferedLayer(DynamicLayer):
    """A full-attention cache layer that appends into a preallocated buffer.

    ``DynamicLayer.update`` concatenates, copying the whole cache at every step (quadratic in the length; the
    largest single cost of the search loop on CPU). This layer writes the new keys/values into spare capacity
    (doubling when full), so a step costs only its own tokens. ``keys``/``values`` stay views of the live slots,
    so everything that reads a ``DynamicLayer`` (masks, ``get_seq_length``, attention) works unchanged.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._buffers = None  # (keys, values), each (batch, heads, capacity, dim)
        self._start = 0
        self._length = 0

    def _refresh(self) -> None:
        keys, values = self._buffers
        self.keys = keys[:, :, self._start : self._start + self._length]
        self.values = values[:, :, self._start : self._start + self._length]

    def _rebuild(self, keys: torch.Tensor, values: torch.Tensor, capacity: int) -> None:
        """Put ``keys``/``values`` (the live slots) at the start of fresh buffers of ``capacity`` slots."""
        batch, heads, length, key_dim = keys.shape
        new_keys = keys.new_empty(batch, heads, capacity, key_dim)
        new_values = values.new_empty(batch, heads, capacity, values.shape[-1])
        new_keys[:, :, :length] = keys
        new_values[:, :, :length] = values
        self._buffers, self._start, self._length = (new_keys, new_values), 0, length
        self._refresh()

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        extra = key_states.shape[-2]
        if self._buffers is None:
            self._rebuild(key_states, value_states, max(2 * extra, extra + 16))
            return self.keys, self.values
        end = self._start + self._length
        if end + extra > self._buffers[0].shape[2] or key_states.shape[0] != self._buffers[0].shape[0]:
            self._rebuild(self.keys, self.values, 2 * (self._length + extra) + 16)
            end = self._length
        self._buffers[0][:, :, end : end + extra] = key_states
        self._buffers[1][:, :, end : end + extra] = value_states
        self._length += extra
        self._refresh()
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self._length if self._buffers is not None else 0

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self._buffers is not None:
            headroom = self._buffers[0].shape[2] - self._start - self._length
            self._rebuild(self.keys[indices], self.values[indices], self._length + max(headroom, 16))

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        self.batch_select_indices(beam_idx)

    def batch_repeat_interleave(self, repeats: int) -> None:
        if self._buffers is not None:
            headroom = self._buffers[0].shape[2] - self._start - self._length
            keys = self.keys.repeat_interleave(repeats, dim=0)
            values = self.values.repeat_interleave(repeats, dim=0)
            self._rebuild(keys, values, self._length + max(headroom, 16))

    def crop(self, tokens_to_remove: int) -> None:
        if tokens_to_remove > 0:
            raise ValueError("crop takes a negative number of tokens to remove.")
        if self._buffers is not None and tokens_to_remove:
            self._length = max(0, self._length + tokens_to_remove)
            self._refresh()

    def trim_left(self, columns: int) -> None:
        """Drop the first ``columns`` slots of every row (a view change, no copy)."""
        if self._buffers is not None and columns > 0:
            columns = min(columns, self._length)
            self._start += columns
            self._length -= columns
            self._refresh()

    def reset(self) -> None:
        self._buffers, self._start, self._length = None, 0, 0
        super().reset()


def new_cache(config=None) -> DynamicCache:
    """A ``DynamicCache`` whose full-attention layers are :class:`BufferedLayer` s (others are kept as they are)."""
    cache = DynamicCache(config=config)
    if config is None:
        cache.layer_class_to_replicate = BufferedLayer
    else:
        cache.layers = [BufferedLayer() if type(layer) is DynamicLayer else layer for layer in cache.layers]
    return cache


@dataclass
class KVSlice:
    """The cached keys/values of one row's first ``length`` real slots: one ``(keys, values)`` per layer, each
    of shape ``(heads, length, head_dim)``."""

    layers: list[tuple[torch.Tensor, torch.Tensor]]
    length: int


def supports_surgery(cache) -> bool:
    """True when every layer is a plain full-attention layer, whose slots we can gather and pad."""
    return isinstance(cache, DynamicCache) and all(
        type(layer) in (DynamicLayer, BufferedLayer) for layer in cache.layers
    )


def select_rows(cache: DynamicCache, index: torch.Tensor) -> None:
    """Keep only the rows ``index`` (in place)."""
    cache.batch_select_indices(index)


def trim_left(cache: DynamicCache, columns: int) -> None:
    """Drop the first ``columns`` slots of every row (in place); used when those slots are padding in all rows."""
    if columns <= 0:
        return
    for layer in cache.layers:
        if isinstance(layer, BufferedLayer):
            layer.trim_left(columns)
        elif layer.is_initialized and layer.keys.numel():
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
        return new_cache(config), mask
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
    cache = new_cache(config)
    for layer_index, (keys, values) in enumerate(data):
        if keys is not None:
            cache.update(keys, values, layer_index)
    return cache, mask.to(reference.layers[0][0].device if reference.layers[0][0] is not None else "cpu")
