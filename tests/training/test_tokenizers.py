"""add_backtrack_token on a foreign BPE tokenizer (mean-initialised rows, reserved pad) and on a task tokenizer."""

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from backtrack_trl.tasks.countdown.format import BACKTRACK_TOKEN, Problem, Step, format_prompt, format_response
from backtrack_trl.tasks.tokenizer import build_countdown_tokenizer, require_backtrack_token
from backtrack_trl.training.tokenizers import add_backtrack_token


PROBLEM = Problem((2, 39, 45, 10), 62)
SOLUTION = [Step(45, "-", 39, 6), Step(10, "*", 6, 60), Step(60, "+", 2, 62)]


def _bpe_tokenizer(special_tokens=("<|begin_of_text|>", "<|end_of_text|>")):
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=list(special_tokens), initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    backend.train_from_iterator([format_prompt(PROBLEM) + format_response(SOLUTION)] * 20, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<|begin_of_text|>", eos_token="<|end_of_text|>"
    )


def _tiny_llama(vocab_size, tie):
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        tie_word_embeddings=tie,
    )
    return LlamaForCausalLM(config)


def test_require_backtrack_token_names_the_fix():
    bpe = _bpe_tokenizer()
    with pytest.raises(ValueError, match="no <backtrack> token.*add_backtrack_token"):
        require_backtrack_token(bpe)


@pytest.mark.parametrize("tie", [False, True])
def test_add_backtrack_token_resizes_with_mean_rows(tie):
    tokenizer = _bpe_tokenizer()
    old_size = len(tokenizer)
    assert len(tokenizer("a<backtrack>b", add_special_tokens=False)["input_ids"]) > 3  # split before adding
    model = _tiny_llama(old_size, tie)
    old_input = model.get_input_embeddings().weight.detach().clone()
    old_output = model.get_output_embeddings().weight.detach().clone()

    backtrack_id = add_backtrack_token(tokenizer, model)

    # <backtrack> and a new <pad> (no reserved pad token in this vocabulary, and EOS is not reused).
    assert len(tokenizer) == old_size + 2
    assert tokenizer.convert_ids_to_tokens(backtrack_id) == BACKTRACK_TOKEN
    assert BACKTRACK_TOKEN in tokenizer.all_special_tokens
    assert tokenizer("a<backtrack>b", add_special_tokens=False)["input_ids"][1] == backtrack_id
    assert tokenizer.pad_token == "<pad>" and tokenizer.pad_token_id != tokenizer.eos_token_id
    assert model.config.pad_token_id == tokenizer.pad_token_id
    assert model.generation_config.pad_token_id == tokenizer.pad_token_id

    new_input = model.get_input_embeddings().weight
    new_output = model.get_output_embeddings().weight
    assert new_input.shape[0] == new_output.shape[0] == len(tokenizer)
    assert torch.equal(new_input[:old_size], old_input)
    assert torch.allclose(new_input[old_size:], old_input.mean(0).expand(2, -1))
    if tie:
        assert new_output.data_ptr() == new_input.data_ptr()
    else:
        assert torch.equal(new_output[:old_size], old_output)
        assert torch.allclose(new_output[old_size:], old_output.mean(0).expand(2, -1))
    # The model still runs on the new ids.
    logits = model(torch.tensor([[backtrack_id, tokenizer.pad_token_id]])).logits
    assert logits.shape == (1, 2, len(tokenizer))

    # Idempotent: nothing changes on a second call.
    state = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    assert add_backtrack_token(tokenizer, model) == backtrack_id
    assert len(tokenizer) == old_size + 2
    assert all(torch.equal(state[name], tensor) for name, tensor in model.state_dict().items())


def test_add_backtrack_token_prefers_reserved_llama3_pad(tmp_path):
    tokenizer = _bpe_tokenizer(("<|begin_of_text|>", "<|end_of_text|>", "<|finetune_right_pad_id|>"))
    old_size = len(tokenizer)
    backtrack_id = add_backtrack_token(tokenizer)
    assert tokenizer.pad_token == "<|finetune_right_pad_id|>"
    assert len(tokenizer) == old_size + 1 and backtrack_id == old_size
    tokenizer.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    assert require_backtrack_token(reloaded) == backtrack_id
    assert reloaded.pad_token == "<|finetune_right_pad_id|>"


def test_add_backtrack_token_on_task_tokenizer_is_a_no_op():
    tokenizer = build_countdown_tokenizer()
    size = len(tokenizer)
    assert add_backtrack_token(tokenizer) == require_backtrack_token(tokenizer)
    assert len(tokenizer) == size and tokenizer.pad_token == "<pad>"
