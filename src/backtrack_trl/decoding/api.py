"""One-line entry points: a registry of decoders, ``decode(...)``, and the ``custom_generate`` callable.

Usage:

```python
from transformers import AutoModelForCausalLM, AutoTokenizer

from backtrack_trl.decoding import SelfBacktrackingDecoder, decode, self_backtracking_generate

# 1. load and decode (no remote code)
decoder = SelfBacktrackingDecoder.from_pretrained("models/countdown-tiny/backtrack-sft", n=32, b=1)
results = decoder.solve(["###Question: numbers [3, 5, 2]->target 16\\n###Response:\\n"])

# 2. any method by name, same result type
results = decode(model, tokenizer, prompts, method="beam", n=16)

# 3. through generate
inputs = tokenizer(prompts, return_tensors="pt", padding=True, padding_side="left")
sequences = model.generate(**inputs, custom_generate=self_backtracking_generate, search_tokenizer=tokenizer, n=8)
```
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers.utils import ModelOutput

from .base import Decoder
from .baselines import BeamSearchDecoder, BestOfNDecoder, GreedyDecoder
from .released import ReleasedSelfBacktrackingDecoder
from .results import SearchResult
from .search import SelfBacktrackingDecoder


DECODERS: dict[str, type[Decoder]] = {
    "greedy": GreedyDecoder,
    "beam": BeamSearchDecoder,
    "best_of_n": BestOfNDecoder,
    "self_backtracking": SelfBacktrackingDecoder,
    "released": ReleasedSelfBacktrackingDecoder,
}


def build_decoder(method: str, model, tokenizer, **options) -> Decoder:
    """Instantiate a decoder by name (one of :data:`DECODERS`) with its options."""
    if method not in DECODERS:
        raise ValueError(f"Unknown decoding method {method!r}; choose one of {sorted(DECODERS)}.")
    return DECODERS[method](model, tokenizer, **options)


def decode(
    model,
    tokenizer,
    prompts: Sequence,
    method: str = "self_backtracking",
    seeds: Sequence[int] | None = None,
    progress: bool = False,
    **options,
) -> list[SearchResult]:
    """Decode problems or prompts with any method; one :class:`SearchResult` per input."""
    return build_decoder(method, model, tokenizer, **options).solve(prompts, seeds=seeds, progress=progress)


def load_model_and_tokenizer(path: str, device: str | torch.device | None = None, dtype=None):
    """``AutoModelForCausalLM`` + ``AutoTokenizer`` from one folder (or Hub id), in eval mode."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs = {"dtype": dtype} if dtype is not None else {}
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    if device is not None:
        model = model.to(device)
    return model.eval(), AutoTokenizer.from_pretrained(path)


def _from_pretrained(cls, path: str, device=None, dtype=None, **options):
    """Load a model folder and build this decoder: ``SelfBacktrackingDecoder.from_pretrained(path, n=32, b=1)``."""
    model, tokenizer = load_model_and_tokenizer(path, device=device, dtype=dtype)
    return cls(model, tokenizer, **options)


Decoder.from_pretrained = classmethod(_from_pretrained)


@dataclass
class SelfBacktrackingOutput(ModelOutput):
    """``generate`` output with ``return_dict_in_generate=True``: the chosen sequences and the search results."""

    sequences: torch.LongTensor | None = None
    results: list | None = None


def run_search_generate(
    model,
    input_ids: torch.LongTensor,
    attention_mask: torch.Tensor | None,
    tokenizer,
    method: str = "self_backtracking",
    return_dict_in_generate: bool = False,
    **options,
):
    """Shared body of the ``custom_generate`` entry points: rows of ``input_ids`` (left padding allowed) are prompts;
    returns ``input_ids`` followed by each row's chosen completion and EOS, right-padded with the pad id."""
    if tokenizer is None:
        raise ValueError(
            "The self-backtracking generate needs the tokenizer: pass `search_tokenizer=tokenizer` (or, for the "
            "trust_remote_code path, `tokenizer=tokenizer`)."
        )
    if input_ids.dim() == 1:
        input_ids = input_ids[None]
    mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
    decoder = build_decoder(method, model, tokenizer, validate_prompts=False, **options)
    prompts, prompt_ids = [], []
    for row, row_mask in zip(input_ids.tolist(), mask.tolist()):
        ids = [token for token, keep in zip(row, row_mask) if keep]
        prompt_ids.append(ids)
        text_ids = ids[1:] if ids and ids[0] == tokenizer.bos_token_id else ids
        prompts.append(tokenizer.decode(text_ids, skip_special_tokens=False))
    # The ids are searched as given (no decode/re-encode round trip); the texts only label the results.
    results = decoder.solve(prompts, token_ids=prompt_ids)
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    tails = []
    for result in results:
        ids = result.completion_ids
        if ids is None:
            ids = tokenizer(result.completion, add_special_tokens=False)["input_ids"]
        tails.append(list(ids) + [eos])
    width = max(len(tail) for tail in tails)
    extra = torch.full((input_ids.shape[0], width), pad, dtype=input_ids.dtype, device=input_ids.device)
    for row, tail in enumerate(tails):
        extra[row, : len(tail)] = torch.tensor(tail, dtype=input_ids.dtype, device=input_ids.device)
    sequences = torch.cat([input_ids, extra], dim=1)
    if return_dict_in_generate:
        return SelfBacktrackingOutput(sequences=sequences, results=results)
    return sequences


def self_backtracking_generate(
    model,
    input_ids: torch.LongTensor,
    logits_processor=None,
    stopping_criteria=None,
    generation_config=None,
    search_tokenizer=None,
    search_method: str = "self_backtracking",
    n: int = 8,
    b: int = 1,
    k: int | str = "paper",
    temperature: float = 0.7,
    top_p: float = 1.0,
    selection: str = "likelihood",
    duplicates: str = "mean",
    tabu: bool = False,
    search_options: dict | None = None,
    **model_kwargs,
):
    """``model.generate(**inputs, custom_generate=self_backtracking_generate, search_tokenizer=tok, n=8, b=1)``.

    ``generate`` prepares the inputs and calls this with its processors and config; the search options are this
    function's own keyword arguments (``generate`` hands them over untouched), ``max_new_tokens`` comes from the
    generation config (64 when unset) and ``return_dict_in_generate=True`` returns a :class:`SelfBacktrackingOutput`
    with the :class:`SearchResult` s. ``generate``'s own stopping criteria are not used (the search stops rows on
    ``<backtrack>``, EOS and the goal marker); its logits processors are applied to the raw logits of every row.
    """
    if search_method not in ("self_backtracking", "best_of_n", "greedy"):
        raise ValueError(f"search_method must be 'self_backtracking', 'best_of_n' or 'greedy', got {search_method!r}.")
    options = dict(search_options or {})
    max_new_tokens = getattr(generation_config, "max_new_tokens", None) or 64
    if logits_processor:
        options.setdefault("logits_processor", logits_processor)
    if search_method == "self_backtracking":
        options.update(n=n, b=b, k=k, tabu=tabu)
    if search_method == "best_of_n":
        options.update(n=n)
    if search_method != "greedy":
        options.update(temperature=temperature, top_p=top_p, selection=selection, duplicates=duplicates)
    return run_search_generate(
        model,
        input_ids,
        model_kwargs.get("attention_mask"),
        search_tokenizer,
        method=search_method,
        return_dict_in_generate=bool(getattr(generation_config, "return_dict_in_generate", False)),
        max_new_tokens=max_new_tokens,
        **options,
    )
