"""Create a small randomly initialised Llama for a task (or extend a pretrained one) and save it with its tokenizer.

The model is a plain ``LlamaForCausalLM`` sized by the YAML of ``recipes/<scale>/init_model.yaml``; its config and
``GenerationConfig`` carry the tokenizer's bos / eos / pad ids, so ``from_pretrained`` + ``generate`` work without
extra arguments.

Usage:

```python
import tempfile

from transformers import AutoModelForCausalLM, AutoTokenizer

from backtrack_trl.training.model_init import init_tiny_llama, save_model_and_tokenizer
from backtrack_trl.tasks.tokenizer import build_countdown_tokenizer

tokenizer = build_countdown_tokenizer()
model = init_tiny_llama(tokenizer, hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=2)
output_dir = tempfile.mkdtemp() + "/init"
save_model_and_tokenizer(model, tokenizer, output_dir)
model = AutoModelForCausalLM.from_pretrained(output_dir)
assert model.generation_config.eos_token_id == AutoTokenizer.from_pretrained(output_dir).eos_token_id
```
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from backtrack_trl.atomic_io import atomic_directory, check_output_dir


# torch / transformers are imported inside the functions: `recipes/init_model.py --help` and its input checks then
# answer in a fraction of a second instead of after several seconds of imports.
if TYPE_CHECKING:
    from transformers import LlamaForCausalLM, PreTrainedTokenizerBase


def _check_sizes(hidden_size: int, num_attention_heads: int, num_key_value_heads: int) -> None:
    if hidden_size % num_attention_heads:
        raise ValueError(
            f"hidden_size={hidden_size} must be divisible by num_attention_heads={num_attention_heads} "
            f"(head_dim = hidden_size / num_attention_heads)."
        )
    if num_attention_heads % num_key_value_heads:
        raise ValueError(
            f"num_attention_heads={num_attention_heads} must be divisible by num_key_value_heads={num_key_value_heads}"
            f" (grouped-query attention shares each key/value head among a whole number of query heads)."
        )


def init_tiny_llama(
    tokenizer: PreTrainedTokenizerBase,
    hidden_size: int = 128,
    intermediate_size: int = 512,
    num_hidden_layers: int = 2,
    num_attention_heads: int = 4,
    num_key_value_heads: int | None = None,
    max_position_embeddings: int = 128,
    tie_word_embeddings: bool = True,
    seed: int = 42,
    rope_theta: float = 10000.0,
) -> LlamaForCausalLM:
    """A randomly initialised ``LlamaForCausalLM`` whose vocabulary and special ids come from ``tokenizer``.

    ``num_key_value_heads=None`` means multi-head attention (as many key/value heads as query heads). The weights
    depend only on ``seed`` (the global torch RNG is left untouched).
    """
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    num_key_value_heads = num_key_value_heads or num_attention_heads
    _check_sizes(hidden_size, num_attention_heads, num_key_value_heads)
    if tokenizer.eos_token_id is None or tokenizer.pad_token_id is None:
        raise ValueError(
            f"The tokenizer at {tokenizer.name_or_path or '<in memory>'!r} needs eos and pad tokens (eos="
            f"{tokenizer.eos_token!r}, pad={tokenizer.pad_token!r}); use build_countdown_tokenizer() or "
            f"add_backtrack_token(tokenizer), which sets a pad token."
        )
    # The model config and the generation config carry the same special ids: generate() needs no extra arguments.
    special_ids = {
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        num_key_value_heads=num_key_value_heads,
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=tie_word_embeddings,
        rope_theta=rope_theta,
        **special_ids,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(**special_ids)
    return model


def save_model_and_tokenizer(
    model, tokenizer: PreTrainedTokenizerBase, output_dir: str | os.PathLike, overwrite: bool = False
) -> Path:
    """``save_pretrained`` the model (with its generation config) and the tokenizer into ``output_dir`` atomically.

    Raises FileExistsError if ``output_dir`` exists and ``overwrite`` is False.
    """
    with atomic_directory(output_dir, overwrite=overwrite, what="model output_dir") as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return Path(output_dir)


# The random Llama's options: keyword arguments of init_tiny_llama, and fields of InitModelArguments of the same name.
LLAMA_OPTIONS = (
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "max_position_embeddings",
    "tie_word_embeddings",
    "seed",
    "rope_theta",
)


@dataclass
class InitModelArguments:
    """Options of ``recipes/init_model.py`` (YAML keys of ``recipes/<scale>/init_model.yaml``)."""

    output_dir: str = field(
        default="models/countdown-tiny/init",
        metadata={"help": "Folder to write the model, its generation config and the tokenizer into."},
    )
    tokenizer: str = field(
        default="countdown",
        metadata={
            "help": "A registered task name ('countdown', 'sudoku') builds that task's character-level tokenizer, "
            "'<task>-numbers' (e.g. 'countdown-numbers') the same with every run of 1-3 digits as one token "
            "(Llama-3's number chunking); otherwise a local folder or Hub id of an existing tokenizer (e.g. "
            "meta-llama/Llama-3.2-1B) to which <backtrack> (and a pad token) is added."
        },
    )
    model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "Optional pretrained causal LM (folder or Hub id) to extend instead of creating a random Llama: "
            "<backtrack> is added, the embeddings are resized with mean-initialised new rows, and the result is "
            "saved to output_dir. The size options below are then ignored."
        },
    )
    hidden_size: int = field(default=128, metadata={"help": "Width of the random Llama."})
    intermediate_size: int = field(default=512, metadata={"help": "MLP inner width of the random Llama."})
    num_hidden_layers: int = field(default=2, metadata={"help": "Number of decoder layers."})
    num_attention_heads: int = field(default=4, metadata={"help": "Query heads (must divide hidden_size)."})
    num_key_value_heads: int | None = field(
        default=None, metadata={"help": "Key/value heads for grouped-query attention (default: num_attention_heads)."}
    )
    max_position_embeddings: int = field(
        default=128, metadata={"help": "Longest sequence (prompt + completion tokens); the paper trains with 128."}
    )
    tie_word_embeddings: bool = field(default=True, metadata={"help": "Share the input embedding and LM head."})
    rope_theta: float = field(default=10000.0, metadata={"help": "RoPE base frequency."})
    seed: int = field(default=42, metadata={"help": "Seed of the random initialisation."})
    overwrite: bool = field(default=False, metadata={"help": "Replace output_dir if it already exists."})

    def __post_init__(self):
        for name in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                     "max_position_embeddings", "num_key_value_heads"):  # fmt: skip
            value = getattr(self, name)
            if value is None and name == "num_key_value_heads":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"--{name} must be a positive integer, got {value!r}.")
        if not self.rope_theta > 0:
            raise ValueError(f"--rope_theta must be > 0, got {self.rope_theta!r}.")
        if not self.model_name_or_path:
            _check_sizes(
                self.hidden_size, self.num_attention_heads, self.num_key_value_heads or self.num_attention_heads
            )


def load_tokenizer(name_or_path: str) -> PreTrainedTokenizerBase:
    """``AutoTokenizer.from_pretrained`` with one clear error when the folder is missing or the Hub is unreachable."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(name_or_path)
    except (OSError, ValueError) as error:
        where = (
            "the folder exists but holds no loadable tokenizer"
            if Path(name_or_path).is_dir()
            else f"there is no such local folder and it could not be fetched from the Hub "
            f"(HF_HUB_OFFLINE={os.environ.get('HF_HUB_OFFLINE', '0')})"
        )
        raise ValueError(
            f"Could not load the tokenizer {name_or_path!r}: {where}. Pass `--tokenizer countdown` to build the task "
            f"tokenizer, or a folder written by save_pretrained."
        ) from error


def init_model(args: InitModelArguments) -> Path:
    """Build (or extend) the model and tokenizer described by ``args`` and save them to ``args.output_dir``."""
    check_output_dir(args.output_dir, args.overwrite, what="model output_dir")
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging

    from backtrack_trl.tasks import TASKS, get_task
    from backtrack_trl.tasks.tokenizer import build_task_tokenizer
    from backtrack_trl.training.tokenizers import add_backtrack_token

    get_task()  # loads the built-in tasks into the registry
    task_name = args.tokenizer.removesuffix("-numbers")
    if task_name in TASKS:
        tokenizer = build_task_tokenizer(
            task_name, model_max_length=args.max_position_embeddings, numbers=args.tokenizer.endswith("-numbers")
        )
    else:
        tokenizer = load_tokenizer(args.tokenizer)
    if args.model_name_or_path:
        try:
            model = AutoModelForCausalLM.from_pretrained(args.model_name_or_path, dtype="auto")
        except OSError as error:
            raise ValueError(
                f"--model_name_or_path {args.model_name_or_path!r}: could not load a model (not a model folder, or "
                f"the Hub is unreachable with HF_HUB_OFFLINE={os.environ.get('HF_HUB_OFFLINE', '0')}). Give a "
                "folder with config.json and weights or a Hub id with network access, or leave it unset for a "
                "random tiny Llama."
            ) from error
        # Padded to a multiple of 64 rows (Llama-3.2: 128,257 tokens -> 128,320 rows), as the SFT recipe does.
        backtrack_id = add_backtrack_token(tokenizer, model, pad_to_multiple_of=64)
    else:
        backtrack_id = add_backtrack_token(tokenizer)
        model = init_tiny_llama(tokenizer, **{name: getattr(args, name) for name in LLAMA_OPTIONS})
    output_dir = save_model_and_tokenizer(model, tokenizer, args.output_dir, overwrite=args.overwrite)
    num_parameters = sum(parameter.numel() for parameter in model.parameters())
    logging.get_logger(__name__).warning(
        f"Saved {type(model).__name__} ({num_parameters:,} parameters, vocab {len(tokenizer)}, "
        f"<backtrack> id {backtrack_id}) and its tokenizer to {output_dir}"
    )
    return output_dir
