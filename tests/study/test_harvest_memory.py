"""The harvest frees its decoder and the CUDA cache before the round's SFT needs the memory."""

from __future__ import annotations

import gc
import weakref

import pytest
import torch


def test_harvest_frees_the_decoder_and_empties_the_cuda_cache(tmp_path, monkeypatch):
    import backtrack_trl.decoding as decoding
    from backtrack_trl.decoding.results import SearchResult
    from backtrack_trl.study.harvest import EmptyHarvestError, harvest

    alive, emptied = [], []

    class FakeDecoder:
        @classmethod
        def from_pretrained(cls, path, device=None, **options):
            decoder = cls()
            alive.append(weakref.ref(decoder))
            return decoder

        def solve(self, problems, **kwargs):
            return [SearchResult(prompt="p", completion="", candidates=[]) for _ in problems]

    def empty_cache():
        gc.collect()
        emptied.append(alive[0]() is None)  # the decoder (and its model) is gone when the cache is emptied

    monkeypatch.setattr(decoding, "SelfBacktrackingDecoder", FakeDecoder)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "empty_cache", empty_cache)
    with pytest.raises(EmptyHarvestError):
        harvest(tmp_path / "model", [{"numbers": [3, 5, 2], "target": 16}], tmp_path / "rounds", "round_1", {"n": 2},
                progress=False)  # fmt: skip
    assert emptied == [True]
