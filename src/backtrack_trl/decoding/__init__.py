"""Decoding for backtrack-trl: the batched KV-cache self-backtracking search, baselines, and generate plug-ins.

Usage:

```python
from backtrack_trl.decoding import SelfBacktrackingDecoder

decoder = SelfBacktrackingDecoder.from_pretrained("models/countdown-tiny/backtrack-sft", n=32, b=1)
results = decoder.solve(["###Question: numbers [3, 5, 2]->target 16\\n###Response:\\n"])
print(results[0].completion)
```
"""

from backtrack_trl.decoding.api import (
    DECODERS,
    SelfBacktrackingOutput,
    build_decoder,
    decode,
    load_model_and_tokenizer,
    run_search_generate,
    self_backtracking_generate,
)
from backtrack_trl.decoding.base import Decoder
from backtrack_trl.decoding.baselines import BeamSearchDecoder, BestOfNDecoder, GreedyDecoder
from backtrack_trl.decoding.custom_generate_writer import write_custom_generate
from backtrack_trl.decoding.processors import BacktrackBudgetLogitsProcessor, TabuLogitsProcessor
from backtrack_trl.decoding.released import ReleasedSelfBacktrackingDecoder
from backtrack_trl.decoding.results import Candidate, SearchResult
from backtrack_trl.decoding.search import SelfBacktrackingDecoder
from backtrack_trl.decoding.selection import DUPLICATE_AGGREGATIONS, SELECTION_RULES
from backtrack_trl.decoding.stopping import BacktrackStoppingCriteria
from backtrack_trl.decoding.tokens import TaskTokens


__all__ = [
    "DECODERS",
    "DUPLICATE_AGGREGATIONS",
    "SELECTION_RULES",
    "BacktrackBudgetLogitsProcessor",
    "BacktrackStoppingCriteria",
    "BeamSearchDecoder",
    "BestOfNDecoder",
    "Candidate",
    "Decoder",
    "GreedyDecoder",
    "ReleasedSelfBacktrackingDecoder",
    "SearchResult",
    "SelfBacktrackingDecoder",
    "SelfBacktrackingOutput",
    "TabuLogitsProcessor",
    "TaskTokens",
    "build_decoder",
    "decode",
    "load_model_and_tokenizer",
    "run_search_generate",
    "self_backtracking_generate",
    "write_custom_generate",
]
