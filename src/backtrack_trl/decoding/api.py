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

import functools
import inspect
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers.utils import ModelOutput

from backtrack_trl.decoding.base import Decoder, check_options
from backtrack_trl.decoding.baselines import BeamSearchDecoder, BestOfNDecoder, GreedyDecoder
from backtrack_trl.decoding.released import ReleasedSelfBacktrackingDecoder
from backtrack_trl.decoding.results import SearchResult
from backtrack_trl.decoding.search import SelfBacktrackingDecoder
from backtrack_trl.decoding.vllm_client import VLLMClient
from backtrack_trl.errors import did_you_mean


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
        raise ValueError(
            f"Unknown decoding method {method!r}; choose one of {sorted(DECODERS)}{did_you_mean(method, DECODERS)}."
        )
    return DECODERS[method](model, tokenizer, **options)


@functools.lru_cache(maxsize=1)
def _stand_in():
    """A 1-layer, 8-wide Llama with the task tokenizer: enough to construct any decoder and run its option checks.

    Built from a ``LlamaConfig`` here: decoding does not import training's ``init_tiny_llama``. The global torch RNG
    is left untouched."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from backtrack_trl.tasks.tokenizer import build_countdown_tokenizer

    tokenizer = build_countdown_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=8,
        intermediate_size=8,
        num_hidden_layers=1,
        num_attention_heads=1,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = LlamaForCausalLM(config)
    return model, tokenizer


def check_decoder_options(method: str, options: dict) -> None:
    """Raise one ValueError naming a bad option of decoder ``method`` (unknown name or bad value), before any model
    is loaded: the decoder is constructed against a tiny stand-in model, so exactly its own checks run."""
    if method not in DECODERS:
        raise ValueError(
            f"unknown method {method!r}; choose one of {sorted(DECODERS)}{did_you_mean(method, DECODERS)}."
        )
    cls = DECODERS[method]
    known = sorted(_option_names(method))
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ValueError(
            f"unknown option(s) {', '.join(map(repr, unknown))} for {method!r}; its options are {', '.join(known)}"
            f"{did_you_mean(unknown[0], known)}."
        )
    options = dict(options)
    folder = options.get("reward_model")
    if isinstance(folder, str):
        # A folder option names a model that a later step may write: its value is checked, not the folder (building
        # the decoder checks the folder).
        if not folder.strip():
            raise ValueError(
                f"reward_model={folder!r}: give the folder of a reward model (recipes/reward_model.py --stage train "
                "writes one)."
            )
        options["reward_model"] = _FolderPlaceholder()
    model, tokenizer = _stand_in()
    if options.get("backend") == "vllm":
        model = _StandInClient()
    try:
        cls(model, tokenizer, **options)
    except TypeError as error:
        raise ValueError(f"{error} ({method!r} takes the options {', '.join(known)}).") from None


class _StandInClient(VLLMClient):
    """Stands for a vLLM engine while a spec is checked (nothing is sampled)."""

    def generate(self, requests, settings):
        raise RuntimeError("a stand-in of the spec check; it never samples")


class _FolderPlaceholder:
    """Stands for a reward model folder while a spec is checked, so the decoder's other checks of it still run."""

    def score(self, prompts, responses):
        raise RuntimeError("a placeholder of the spec check; it never scores")


# Options a decoder sets itself when it calls its base class (greedy is the search with n=1, b=0, temperature 0).
_FIXED_OPTIONS = {"greedy": {"n", "b", "temperature"}, "best_of_n": {"b"}}


def _option_names(method: str) -> set[str]:
    """Keyword options of decoder ``method``, following ``**kwargs`` up its base classes."""
    names: set[str] = set()
    for klass in DECODERS[method].__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        params = inspect.signature(init).parameters.values()
        names |= {p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            break
    return (
        names
        - {"self", "model", "tokenizer", "validate_prompts", "logits_processor"}
        - _FIXED_OPTIONS.get(method, set())
    )


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


DTYPES = ("auto", "bfloat16", "float16", "float32")


def resolve_device(device: str | torch.device | None = "auto") -> str | torch.device:
    """``"auto"`` (or None): ``"cuda"`` when a GPU is visible, else ``"cpu"``; anything else is returned as is."""
    if device is None or device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def resolve_dtype(dtype: str | torch.dtype | None, device) -> torch.dtype | str | None:
    """A dtype for ``from_pretrained``: a name of :data:`DTYPES` or a ``torch.dtype``. ``"auto"`` is the checkpoint's
    dtype on a GPU (bfloat16 for a bfloat16 checkpoint) and float32 on CPU; None leaves transformers' default
    (float32)."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}.")
    if dtype == "auto":
        return "auto" if torch.device(device).type == "cuda" else torch.float32
    return getattr(torch, dtype)


def load_model_and_tokenizer(
    path: str, device: str | torch.device | None = None, dtype=None, option: str | None = None
):
    """``AutoModelForCausalLM`` + ``AutoTokenizer`` from one folder (or Hub id), in eval mode (``dtype``: see
    :func:`resolve_dtype`; ``device`` None leaves the model where ``from_pretrained`` puts it). ``option``: the
    recipe option the path came from (e.g. ``--model_name_or_path``), named in the error of a path that loads no
    model."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = resolve_dtype(dtype, device if device is not None else "cpu")
    kwargs = {"dtype": dtype} if dtype is not None else {}
    try:
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except (OSError, ValueError) as error:  # the Hub's repo-id validation error is a ValueError
        where = f"{option} {str(path)!r}" if option else f"Model {str(path)!r}"
        fix = "give a model folder written by recipes/sft.py or recipes/init_model.py"
        if Path(path).is_dir():
            raise ValueError(f"{where} holds no loadable model ({error}): {fix} (config.json + weights).") from None
        offline = os.environ.get("HF_HUB_OFFLINE", "0")
        raise FileNotFoundError(
            f"{where}: no such folder, and not a model on the Hub (HF_HUB_OFFLINE={offline}): {fix} (e.g. "
            "results/countdown-tiny/models/backtrack-sft), or a Hub id with network access."
        ) from None
    if device is not None:
        model = model.to(device)
    return model.eval(), AutoTokenizer.from_pretrained(path)


def _from_pretrained(
    cls,
    path: str,
    device="auto",
    dtype=None,
    backend=None,
    vllm_server_base_url=None,
    vllm_options=None,
    model_option: str | None = None,
    **options,
):
    """Load a model folder and build this decoder: ``SelfBacktrackingDecoder.from_pretrained(path, n=32, b=1)``.

    ``device="auto"`` (or None) puts the model on the GPU when there is one; ``dtype`` as :func:`resolve_dtype`.

    ``backend="vllm"`` samples with vLLM instead: an in-process engine on the folder (``vllm_options`` are its
    ``vllm.LLM`` arguments), or the server at ``vllm_server_base_url`` (serving this folder). ``model_option``: the
    recipe option ``path`` came from, named in the error of a path that loads no model."""
    if backend == "vllm" or vllm_server_base_url:
        from transformers import AutoTokenizer

        from backtrack_trl.decoding.vllm_backend import make_vllm_client

        if "dtype" not in (vllm_options or {}) and dtype is not None:
            vllm_options = {**(vllm_options or {}), "dtype": dtype}
        client = make_vllm_client(str(path), vllm_server_base_url, **(vllm_options or {}))
        return cls(client, AutoTokenizer.from_pretrained(path), backend="vllm", **options)
    model, tokenizer = load_model_and_tokenizer(path, device=resolve_device(device), dtype=dtype, option=model_option)
    return cls(model, tokenizer, backend=backend, **options) if backend else cls(model, tokenizer, **options)


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
    check_options(search_method=search_method)
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
