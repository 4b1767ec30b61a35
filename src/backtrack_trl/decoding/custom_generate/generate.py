"""Self-backtracking search as this model's ``generate`` (a transformers ``custom_generate`` module).

A model folder written by backtrack-trl's ``recipes/sft.py`` carries this file as ``custom_generate/generate.py``.
Loaded with ``trust_remote_code=True``, the model's ``generate`` runs the self-backtracking search::

    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained("models/countdown-tiny/backtrack-sft", trust_remote_code=True)
    tokenizer = AutoTokenizer.from_pretrained("models/countdown-tiny/backtrack-sft")
    inputs = tokenizer(["###Question: numbers [3, 5, 2]->target 16\\n###Response:\\n"], return_tensors="pt")
    sequences = model.generate(**inputs, tokenizer=tokenizer, n=8, b=1, max_new_tokens=64)
    print(tokenizer.decode(sequences[0]))

Keyword arguments: ``tokenizer`` (loaded from the model folder when omitted), ``max_new_tokens`` (64),
``return_dict_in_generate`` (also returns the per-problem ``SearchResult`` s), ``search_method``
(``"self_backtracking"`` default, ``"best_of_n"``, ``"greedy"``, ``"beam"``, ``"released"``) and that decoder's
options (``n``, ``b``, ``k``, ``temperature``, ``top_p``, ``selection``, ``duplicates``, ``tabu``, ...). Pass
arguments by keyword. Without ``trust_remote_code`` nothing here runs: ``generate`` is the stock one, and
``backtrack_trl.decoding.SelfBacktrackingDecoder`` gives the same search with no remote code at all.
"""

# Arguments that transformers' generate hands to a custom generate (or that users pass out of habit) which the
# search does not use: it has its own stopping rules and sampling.
_IGNORED = (
    "generation_config",
    "logits_processor",
    "stopping_criteria",
    "prefix_allowed_tokens_fn",
    "synced_gpus",
    "assistant_model",
    "streamer",
    "negative_prompt_ids",
    "negative_prompt_attention_mask",
    "do_sample",
    "pad_token_id",
    "eos_token_id",
    "bos_token_id",
    "use_cache",
)


def generate(model, input_ids=None, attention_mask=None, tokenizer=None, inputs=None, **kwargs):
    try:
        from backtrack_trl.decoding.api import run_search_generate
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError(
            "This model's custom generate runs the self-backtracking search of the backtrack-trl package: "
            "`pip install backtrack-trl`, or load the model without trust_remote_code for the stock generate."
        ) from error
    if input_ids is None:
        input_ids = inputs
    if input_ids is None:
        raise ValueError("Pass the prompts as input_ids=... (e.g. model.generate(**tokenizer(prompts, ...))).")
    if tokenizer is None:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(model.name_or_path)
    generation_config = kwargs.get("generation_config")
    max_new_tokens = kwargs.pop("max_new_tokens", None) or getattr(generation_config, "max_new_tokens", None)
    return_dict = bool(kwargs.pop("return_dict_in_generate", False))
    method = kwargs.pop("search_method", "self_backtracking")
    for key in _IGNORED:
        kwargs.pop(key, None)
    options = {key: value for key, value in kwargs.items() if value is not None}
    if method in ("self_backtracking", "best_of_n", "greedy", "beam"):
        options.setdefault("max_new_tokens", max_new_tokens or 64)
    return run_search_generate(
        model,
        input_ids,
        attention_mask,
        tokenizer,
        method=method,
        return_dict_in_generate=return_dict,
        **options,
    )
