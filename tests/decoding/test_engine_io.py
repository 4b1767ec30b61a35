"""What the engines share: a sample continues its state; the room a state leaves; left padding."""

import torch
from _decoding_utils import tokenizer

from backtrack_trl.decoding.engine_io import Expansion, ModelEngine, Sample, State
from backtrack_trl.decoding.tokens import TaskTokens


def _engine(max_new_tokens=10):
    model = torch.nn.Linear(2, 2)  # only its parameters' device is read
    return ModelEngine(model, TaskTokens.from_tokenizer(tokenizer()), 0.7, 1.0, max_new_tokens, None, 0)


def test_a_sample_continues_its_state():
    state = State(tokens=(7, 8), logprobs=(-0.5, -0.25), no_backtrack=(-1.0, -2.0))
    sample = Sample.after(state, expansion=3, sample=1, new=[9, 4], logprobs=[-0.1, -0.2], no_backtrack=[-3, -4],
                          end="backtrack")  # fmt: skip
    assert sample.tokens == (7, 8, 9, 4) and sample.new_tokens == 2
    assert sample.logprobs == (-0.5, -0.25, -0.1, -0.2) and sample.no_backtrack == (-1.0, -2.0, -3, -4)
    assert (sample.expansion, sample.sample, sample.end) == (3, 1, "backtrack")
    assert sample.kv is None and sample.kv_keep is None


def test_room_counts_the_state_tokens_and_rows_are_left_padded():
    engine = _engine(max_new_tokens=10)
    assert engine.room(Expansion(0, State(tokens=(1, 2, 3)))) == 7
    assert engine.room(Expansion(0, State(tokens=tuple(range(12))))) == -2
    pad = engine.tokens.pad_id
    ids, mask = engine.left_padded([[5, 6, 7], [8], []])
    assert ids.tolist() == [[5, 6, 7], [pad, pad, 8], [pad, pad, pad]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1], [0, 0, 0]] and mask.dtype == torch.long
    ids, mask = engine.left_padded([[], []])
    assert ids.shape == mask.shape == (2, 0)
