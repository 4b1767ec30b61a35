"""One-line API, model.generate(custom_generate=...), the trust_remote_code model folder, and clear errors."""

import pytest
import torch
from _decoding_utils import GOAL, PROMPT, PROMPT_8, scripted, tiny_llama, tokenizer
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

from backtrack_trl.decoding import (
    DECODERS,
    ReleasedSelfBacktrackingDecoder,
    SelfBacktrackingDecoder,
    build_decoder,
    decode,
    self_backtracking_generate,
    write_custom_generate,
)
from backtrack_trl.training.model_init import save_model_and_tokenizer


TABLE = {(): {"5+3=8": 0.3, "4+4=8": 0.7}}


def test_custom_generate_callable_runs_the_search():
    tok = tokenizer()
    model = scripted(TABLE)
    inputs = tok([PROMPT_8, PROMPT], return_tensors="pt", padding=True, padding_side="left")
    sequences = model.generate(
        **inputs, custom_generate=self_backtracking_generate, search_tokenizer=tok, n=8, b=1, max_new_tokens=32
    )
    width = inputs["input_ids"].shape[1]
    assert torch.equal(sequences[:, :width], inputs["input_ids"])
    text = tok.decode(sequences[0, width:], skip_special_tokens=False)
    assert text.startswith("4+4=8\n" + GOAL + tok.eos_token)
    out = model.generate(
        **inputs, custom_generate=self_backtracking_generate, search_tokenizer=tok, n=4, b=0, max_new_tokens=16,
        return_dict_in_generate=True,
    )  # fmt: skip
    assert len(out.results) == 2 and out.results[0].completion == "4+4=8\n" + GOAL
    assert out.sequences.shape[0] == 2


def test_model_folder_with_custom_generate_runs_the_search_with_trust_remote_code(tmp_path):
    tok = tokenizer()
    model = tiny_llama(hidden_size=32, layers=1)
    folder = tmp_path / "model"
    save_model_and_tokenizer(model, tok, folder)
    write_custom_generate(folder)
    assert (folder / "custom_generate" / "generate.py").is_file()

    plain = AutoModelForCausalLM.from_pretrained(folder)  # default path: no remote code, stock generate
    assert plain.generate.__func__ is type(plain).generate

    remote = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)
    inputs = tok([PROMPT_8], return_tensors="pt")
    sequences = remote.generate(**inputs, tokenizer=tok, n=4, b=1, max_new_tokens=12, seed=5)
    expected = SelfBacktrackingDecoder(plain, tok, n=4, b=1, max_new_tokens=12, seed=5).solve([PROMPT_8])[0]
    width = inputs["input_ids"].shape[1]
    assert sequences[0, width:].tolist()[: len(expected.completion_ids)] == expected.completion_ids
    greedy = remote.generate(**inputs, search_method="greedy", max_new_tokens=12)  # tokenizer from the folder
    assert greedy.shape[0] == 1


@pytest.mark.parametrize(
    "method, options",
    [("self_backtracking", {"n": 4, "b": 1}), ("best_of_n", {"n": 4}), ("greedy", {}), ("beam", {"n": 3}),
     ("released", {"n": 2, "b": 1})],
)  # fmt: skip
def test_every_search_method_runs_through_the_remote_code_path(tmp_path, method, options):
    # The decoders call generate themselves (beam, released): with trust_remote_code the instance's generate is
    # our custom one, and they must reach the stock generate, not re-enter the search.
    tok = tokenizer()
    model = tiny_llama(hidden_size=32, layers=1, biased=True)
    folder = tmp_path / "model"
    save_model_and_tokenizer(model, tok, folder)
    write_custom_generate(folder)
    remote = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)
    plain = AutoModelForCausalLM.from_pretrained(folder)
    inputs = tok([PROMPT_8], return_tensors="pt")
    out = remote.generate(
        **inputs, tokenizer=tok, search_method=method, max_new_tokens=16, seed=3, return_dict_in_generate=True,
        **options,
    )  # fmt: skip
    length = {} if method == "released" else {"max_new_tokens": 16}  # the released code counts max_length
    expected = decode(plain, tok, [PROMPT_8], method=method, seed=3, **length, **options)[0]
    assert out.results[0].method == expected.method and out.results[0].completion == expected.completion
    width = inputs["input_ids"].shape[1]
    assert tok.decode(out.sequences[0, width:], skip_special_tokens=True) == tok.decode(
        tok(expected.completion, add_special_tokens=False)["input_ids"], skip_special_tokens=True
    )


def test_released_decoder_on_a_remote_code_model_reaches_the_stock_generate(tmp_path):
    # The folder's custom generate replaces the instance's generate; the released decoder must not call it (it used to
    # fail inside, and the failure was swallowed into empty answers).
    tok = tokenizer()
    folder = tmp_path / "model"
    save_model_and_tokenizer(tiny_llama(hidden_size=32, layers=1, biased=True), tok, folder)
    write_custom_generate(folder)
    remote = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)
    assert getattr(remote.generate, "__func__", None) is not type(remote).generate  # the search, not the stock one
    plain = AutoModelForCausalLM.from_pretrained(folder)
    options = {"n": 3, "b": 1, "max_length": 40, "seed": 7}
    got = ReleasedSelfBacktrackingDecoder(remote, tok, **options).solve([PROMPT, PROMPT_8])
    expected = ReleasedSelfBacktrackingDecoder(plain, tok, **options).solve([PROMPT, PROMPT_8])
    assert all(result.completion and result.forward_passes > 0 for result in got)
    assert [r.completion for r in got] == [r.completion for r in expected]
    assert [[c.to_dict() for c in r.candidates] for r in got] == [
        [c.to_dict() for c in r.candidates] for r in expected
    ]


def test_registry_and_from_pretrained(tmp_path):
    tok = tokenizer()
    folder = tmp_path / "model"
    save_model_and_tokenizer(tiny_llama(hidden_size=32, layers=1), tok, folder)
    decoder = SelfBacktrackingDecoder.from_pretrained(str(folder), n=2, b=0, max_new_tokens=8)
    assert decoder.solve([PROMPT_8])[0].method == "self_backtracking"
    assert set(DECODERS) == {"greedy", "beam", "best_of_n", "self_backtracking", "released"}
    with pytest.raises(ValueError, match="Unknown decoding method 'dfs'"):
        build_decoder("dfs", decoder.model, tok)


def _tokenizer_without_backtrack():
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, "a": 4}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )


def test_clear_errors():
    tok = tokenizer()
    model = scripted(TABLE)
    with pytest.raises(ValueError, match="<backtrack>"):
        SelfBacktrackingDecoder(model, _tokenizer_without_backtrack())
    with pytest.raises(ValueError, match=r"n \(samples per state, N\) must be an integer in \[1, 4096\], got 0"):
        SelfBacktrackingDecoder(model, tok, n=0)
    with pytest.raises(ValueError, match=r"b \(backtracking rounds\) must be an integer in \[0, 64\], got -1"):
        SelfBacktrackingDecoder(model, tok, b=-1)
    with pytest.raises(
        ValueError, match=r"k must be 'paper', 'released' \(both floor\(sqrt N\)\), 'sqrt_b' or an integer"
    ):
        SelfBacktrackingDecoder(model, tok, k=0)
    with pytest.raises(ValueError, match="selection='best' is not one of"):
        SelfBacktrackingDecoder(model, tok, selection="best")
    with pytest.raises(ValueError, match="not in the Countdown format"):
        decode(model, tok, ["What is 5+3?"], method="greedy")
    small = tiny_llama(hidden_size=32, layers=1)
    small.resize_token_embeddings(50)
    with pytest.raises(ValueError, match="vocabulary of 50 tokens but the tokenizer .* has 110"):
        SelfBacktrackingDecoder(small, tok)
