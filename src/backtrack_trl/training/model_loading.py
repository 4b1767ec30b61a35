"""Load the model and tokenizer a trainer starts from, and prepare them for backtracking: ``<backtrack>`` in the
vocabulary (embeddings resized and mean-initialised, ZeRO-3 aware), greedy generation defaults, and LoRA configs that
train the embeddings and LM head so the new token can learn.

Usage:

```python
from trl import ModelConfig, SFTConfig

from backtrack_trl.training.model_loading import (
    configure_generation,
    ensure_backtrack_token,
    load_model,
    load_tokenizer,
)

model_args = ModelConfig(model_name_or_path="models/countdown-tiny/init")
training_args = SFTConfig("models/countdown-tiny/backtrack-sft", use_cpu=True, bf16=False)
tokenizer, model = load_tokenizer(model_args, training_args), load_model(model_args, training_args)
backtrack_id = ensure_backtrack_token(tokenizer, model)  # adds <backtrack> when missing
configure_generation(model, tokenizer)  # generate() stops at EOS and decodes greedily
```
"""

from __future__ import annotations

import logging

import torch
from accelerate import PartialState
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase
from transformers.integrations import is_deepspeed_zero3_enabled
from trl import ModelConfig, SFTConfig, get_peft_config
from trl.trainer.utils import get_quantization_config

from backtrack_trl.tasks.base import BACKTRACK_TOKEN
from backtrack_trl.training.tokenizers import add_backtrack_token, mean_init_rows


logger = logging.getLogger(__name__)

# A resized vocabulary is padded to a multiple of this (Llama-3.2: 128,256 + <backtrack> -> 128,320 rows): matmuls
# over the embedding and LM head are faster on aligned shapes. Decoders never sample the padding ids.
VOCAB_MULTIPLE = 64
# Generation-config fields of sampling, reset when a trained model is saved (see configure_generation).
SAMPLING_FIELDS = ("temperature", "top_p", "top_k", "min_p", "typical_p")


def load_tokenizer(model_args: ModelConfig, training_args: SFTConfig) -> PreTrainedTokenizerBase:
    """The tokenizer of ``model_name_or_path``, with the ``eos_token`` / ``pad_token`` the training arguments name
    (each must already be in the vocabulary)."""
    tokenizer = AutoTokenizer.from_pretrained(
        model_args.model_name_or_path,
        revision=model_args.model_revision,
        trust_remote_code=getattr(training_args, "trust_remote_code", False),
    )
    for name in ("eos_token", "pad_token"):
        value = getattr(training_args, name, None)
        if value is not None:
            if value not in tokenizer.get_vocab():
                raise ValueError(
                    f"`{name}: {value}` is not in the vocabulary of {model_args.model_name_or_path!r}: give a token "
                    f"of that tokenizer (its own is {getattr(tokenizer, name)!r}), or leave {name} unset."
                )
            setattr(tokenizer, name, value)
    return tokenizer


def load_model(model_args: ModelConfig, training_args: SFTConfig) -> PreTrainedModel:
    """The causal LM of ``model_name_or_path`` with the dtype, attention and quantization of ``model_args``; no KV
    cache while activation checkpointing is on."""
    dtype = model_args.dtype if model_args.dtype in (None, "auto") else getattr(torch, model_args.dtype)
    quantization_config = get_quantization_config(model_args)
    model_kwargs = {
        "revision": model_args.model_revision,
        "trust_remote_code": getattr(training_args, "trust_remote_code", False),
        "attn_implementation": model_args.attn_implementation,
        "dtype": dtype,
        "use_cache": not (training_args.activation_checkpointing or training_args.gradient_checkpointing),
        # Quantized weights are placed on this process's device; otherwise the trainer places the model.
        "device_map": {"": PartialState().local_process_index} if quantization_config is not None else None,
        "quantization_config": quantization_config,
    }
    return AutoModelForCausalLM.from_pretrained(model_args.model_name_or_path, **model_kwargs)


def ensure_backtrack_token(
    tokenizer: PreTrainedTokenizerBase, model: PreTrainedModel, pad_to_multiple_of: int | None = VOCAB_MULTIPLE
) -> int:
    """Add ``<backtrack>`` (and a pad token) when missing and resize + mean-initialise the embeddings, padded to a
    multiple of ``pad_to_multiple_of`` rows (None: exactly ``len(tokenizer)``; LoRA runs use it, because
    ``AutoPeftModelForCausalLM`` resizes the base model to ``len(tokenizer)`` when it loads the adapter).

    Runs before the trainer (hence before DeepSpeed) starts. Under ZeRO-3 the weights are already partitioned by
    ``from_pretrained``, so the new rows are set inside ``GatheredParameters`` (rank 0 writes, then re-partitions).
    """
    old_rows = model.get_input_embeddings().weight.shape[0]
    if not is_deepspeed_zero3_enabled():
        token_id = add_backtrack_token(tokenizer, model, pad_to_multiple_of=pad_to_multiple_of)
    else:
        import deepspeed

        token_id = add_backtrack_token(tokenizer)  # tokenizer only; the partitioned weights are handled below
        embeddings = model.get_input_embeddings()
        with deepspeed.zero.GatheredParameters([embeddings.weight]):
            old_rows = embeddings.weight.shape[0]
        if len(tokenizer) > old_rows:
            model.resize_token_embeddings(len(tokenizer), pad_to_multiple_of=pad_to_multiple_of, mean_resizing=False)
            output = model.get_output_embeddings()
            tied = output is None or output.weight is model.get_input_embeddings().weight
            params = [model.get_input_embeddings().weight] + ([] if tied else [output.weight])
            with deepspeed.zero.GatheredParameters(params, modifier_rank=0):
                for param in params:
                    mean_init_rows(param, old_rows)
        if getattr(model.config, "pad_token_id", None) is None:
            model.config.pad_token_id = tokenizer.pad_token_id
    if len(tokenizer) > old_rows:
        logger.info(
            "Added %s (id %d); embeddings resized %d -> %d rows (%d tokens).",
            BACKTRACK_TOKEN, token_id, old_rows, model.get_input_embeddings().weight.shape[0], len(tokenizer),
        )  # fmt: skip
    return token_id


def configure_generation(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
    """Make ``generate`` stop at the EOS the collator trains, pad with the tokenizer's pad id, and decode greedily.

    A base model's sampling defaults (Llama-3.2's ``do_sample: true, temperature: 0.6, top_p: 0.9``) are dropped:
    saved with the fine-tuned model they would apply silently to every ``generate`` call that does not set them.
    The decoders pass their own sampling options."""
    model.config.pad_token_id = tokenizer.pad_token_id
    generation_config = model.generation_config
    generation_config.do_sample = False
    for name in SAMPLING_FIELDS:
        setattr(generation_config, name, None)
    others = generation_config.eos_token_id
    others = [] if others is None else [others] if isinstance(others, int) else list(others)
    eos = [tokenizer.eos_token_id] + [i for i in others if i != tokenizer.eos_token_id]
    generation_config.eos_token_id = eos[0] if len(eos) == 1 else eos
    generation_config.pad_token_id = tokenizer.pad_token_id
    if tokenizer.bos_token_id is not None:
        generation_config.bos_token_id = tokenizer.bos_token_id


def _module_name(model: torch.nn.Module, module: torch.nn.Module | None) -> str | None:
    for name, candidate in model.named_modules():
        if candidate is module:
            return name.split(".")[-1]
    return None


def lora_config_for_new_tokens(model_args: ModelConfig, model: PreTrainedModel):
    """``get_peft_config(model_args)`` with the embeddings and LM head in ``modules_to_save`` so ``<backtrack>`` learns.

    LoRA alone freezes the embedding matrix, so the freshly added ``<backtrack>`` row (mean-initialised) would
    never move and the model could not learn to emit it. Returns None when ``use_peft`` is off.
    """
    peft_config = get_peft_config(model_args)
    if peft_config is None:
        return None
    input_name = _module_name(model, model.get_input_embeddings())
    output_name = _module_name(model, model.get_output_embeddings())
    modules = list(peft_config.modules_to_save or [])
    for name in (input_name, output_name):
        if name is not None and name not in modules:
            modules.append(name)
    peft_config.modules_to_save = modules
    if getattr(model.config, "tie_word_embeddings", False):
        # Keep the trainable copies of the tied input/output embeddings tied.
        peft_config.ensure_weight_tying = True
    targets = peft_config.target_modules
    if isinstance(targets, (list, set)) and output_name in targets:
        raise ValueError(
            f"`lora_target_modules` contains {output_name!r}: TRL scores tokens with the LM head weight directly, so "
            "an adapter on it never trains. The LM head is trained in full instead (modules_to_save)."
        )
    logger.info("LoRA: training %s in full so %s learns (modules_to_save=%s).", modules, BACKTRACK_TOKEN, modules)
    return peft_config
