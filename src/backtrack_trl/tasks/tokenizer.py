"""Task tokenizers: small character-level tokenizers built from a task's phrases, and the token lookups every
decoder needs (:func:`single_token_id`, :func:`require_backtrack_token`).

A task tokenizer (:func:`build_task_tokenizer`) spells every printable ASCII character as its own token, except the
task's template phrases (:meth:`backtrack_trl.tasks.Task.tokenizer_phrases`), which each get one token (Countdown:
``"###Question:"``, ``" numbers"``, ``"->target"``, ``"###Response:"``, ``"Goal Reached!"``; Sudoku: ``" sudoku"``
instead of the two Countdown phrases). Encoding is lossless for printable ASCII text; ``<s>`` is prepended by
``tokenizer(text)``; ``</s>`` is the EOS the training side appends; ``<backtrack>`` is one additional special token.
Adding ``<backtrack>`` to a pretrained tokenizer (and resizing its model) is training's job:
:func:`backtrack_trl.training.tokenizers.add_backtrack_token`.

Usage:

```python
from backtrack_trl.tasks.tokenizer import build_countdown_tokenizer, require_backtrack_token

tokenizer = build_countdown_tokenizer()
ids = tokenizer("###Question: numbers [2, 39]->target 41\\n###Response:\\n")["input_ids"]
assert ids[0] == tokenizer.bos_token_id
assert tokenizer.decode(ids[1:]) == "###Question: numbers [2, 39]->target 41\\n###Response:\\n"
backtrack_id = require_backtrack_token(tokenizer)  # ValueError with the fix if the token is missing
```
"""

from __future__ import annotations

import re
import string

from tokenizers import AddedToken as RawAddedToken
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

from backtrack_trl.tasks.base import Task, get_task
from backtrack_trl.tasks.frame import BACKTRACK_TOKEN


BOS_TOKEN = "<s>"
EOS_TOKEN = "</s>"
PAD_TOKEN = "<pad>"
UNK_TOKEN = "<unk>"
SPECIAL_TOKENS = (PAD_TOKEN, BOS_TOKEN, EOS_TOKEN, UNK_TOKEN, BACKTRACK_TOKEN)
# Every printable ASCII character (letters, digits, punctuation, space, \t \n \r \x0b \x0c) is a token, so any
# ASCII text round-trips; anything else becomes <unk>.
CHARACTERS = tuple(dict.fromkeys(string.printable))


# With ``numbers=True`` every run of 1-3 digits is one token, as Llama-3's pre-tokenizer splits numbers
# (``\\p{N}{1,3}``): every 2- and 3-digit string ("00".."999", leading zeros included so any text round-trips)
# joins the single digits, so a step's operands and result are one token each.
NUMBER_TOKENS = tuple(f"{n:0{width}d}" for width in (2, 3) for n in range(10**width))


def template_phrases(task: Task | str = "countdown") -> tuple[str, ...]:
    """The task's phrases that get one token each (special tokens such as ``<backtrack>`` are added apart)."""
    return tuple(phrase for phrase in get_task(task).tokenizer_phrases() if phrase not in SPECIAL_TOKENS)


def task_vocab(task: Task | str = "countdown", numbers: bool = False) -> dict[str, int]:
    """Token -> id of a task tokenizer: special tokens first (``<pad>`` = 0), then the phrases, then characters
    (then the number tokens "00".."999" with ``numbers=True``)."""
    tokens = list(SPECIAL_TOKENS) + list(template_phrases(task)) + list(CHARACTERS)
    tokens += list(NUMBER_TOKENS if numbers else ())
    return {token: index for index, token in enumerate(tokens)}


def countdown_vocab(numbers: bool = False) -> dict[str, int]:
    """Token -> id of the Countdown tokenizer (:func:`task_vocab` of Countdown)."""
    return task_vocab("countdown", numbers)


def build_countdown_tokenizer(model_max_length: int = 128, numbers: bool = False) -> PreTrainedTokenizerFast:
    """The Countdown task tokenizer (:func:`build_task_tokenizer` of Countdown)."""
    return build_task_tokenizer("countdown", model_max_length=model_max_length, numbers=numbers)


def build_task_tokenizer(
    task: Task | str = "countdown", model_max_length: int = 128, numbers: bool = False
) -> PreTrainedTokenizerFast:
    """Build a task's character-level tokenizer (a ``PreTrainedTokenizerFast``; ``save_pretrained`` /
    ``AutoTokenizer``).

    ``model_max_length`` is only recorded in the tokenizer config (the paper trains with max length 128).
    ``numbers=True``: numbers are split into runs of 1-3 digits, each one token (Llama-3's number chunking), instead
    of one token per digit.
    """
    vocab = task_vocab(task, numbers)
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK_TOKEN))
    # One regex: a template phrase if one starts here (listed first, so it wins), else (a number chunk, or) any
    # single character.
    phrases = "|".join(re.escape(phrase) for phrase in template_phrases(task))
    digits = "[0-9]{1,3}|" if numbers else ""
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(f"{phrases}|{digits}[\\s\\S]"), behavior="isolated")
    # Tokens are literal text pieces: decoding is plain concatenation (no spaces inserted between tokens).
    backend.decoder = decoders.Fuse()
    backend.post_processor = processors.TemplateProcessing(
        single=f"{BOS_TOKEN} $A",
        pair=f"{BOS_TOKEN} $A $B:1",
        special_tokens=[(BOS_TOKEN, vocab[BOS_TOKEN])],
    )
    # Registered as special added tokens so "<backtrack>" inside a text is matched before pre-tokenization.
    backend.add_special_tokens([RawAddedToken(token, special=True, normalized=False) for token in SPECIAL_TOKENS])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        unk_token=UNK_TOKEN,
        extra_special_tokens=[BACKTRACK_TOKEN],
        # The default clean-up would rewrite " ," or " !" and break lossless decoding.
        clean_up_tokenization_spaces=False,
        model_max_length=model_max_length,
        padding_side="right",
    )
    return tokenizer


def single_token_id(tokenizer: PreTrainedTokenizerBase, token: str) -> int | None:
    """Id of ``token`` if the tokenizer encodes it as exactly one token (None otherwise)."""
    vocab = tokenizer.get_vocab()
    if token not in vocab:
        return None
    ids = tokenizer(token, add_special_tokens=False)["input_ids"]
    return vocab[token] if list(ids) == [vocab[token]] else None


def require_backtrack_token(tokenizer: PreTrainedTokenizerBase) -> int:
    """Return the id of ``<backtrack>``; raise a ValueError naming the tokenizer and the fix when it is missing."""
    token_id = single_token_id(tokenizer, BACKTRACK_TOKEN)
    if token_id is None:
        raise ValueError(
            f"The tokenizer at {tokenizer.name_or_path or '<in memory>'!r} has no {BACKTRACK_TOKEN} token (it must be "
            f"one special token). Run backtrack_trl.training.tokenizers.add_backtrack_token(tokenizer, model) or "
            f"`python recipes/init_model.py --tokenizer <path>` to add it and resize the model embeddings."
        )
    return token_id
