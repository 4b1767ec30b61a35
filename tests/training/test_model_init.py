"""Tiny Llama init, atomic save, and the init_model recipe (in-process and as a script)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from backtrack_trl.tasks.tokenizer import build_countdown_tokenizer, require_backtrack_token
from backtrack_trl.training.model_init import InitModelArguments, init_model, init_tiny_llama, save_model_and_tokenizer


REPO = Path(__file__).resolve().parents[2]
SMALL = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2}


def _run(*args, cwd=REPO):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_init_tiny_llama_ids_and_seed():
    tokenizer = build_countdown_tokenizer()
    model = init_tiny_llama(tokenizer, seed=3, **SMALL)
    assert model.config.vocab_size == len(tokenizer)
    assert (model.config.bos_token_id, model.config.eos_token_id, model.config.pad_token_id) == (
        tokenizer.bos_token_id,
        tokenizer.eos_token_id,
        tokenizer.pad_token_id,
    )
    generation = model.generation_config
    assert (generation.bos_token_id, generation.eos_token_id, generation.pad_token_id) == (1, 2, 0)
    same = init_tiny_llama(tokenizer, seed=3, **SMALL)
    other = init_tiny_llama(tokenizer, seed=4, **SMALL)
    weights = model.get_input_embeddings().weight
    assert torch.equal(weights, same.get_input_embeddings().weight)
    assert not torch.equal(weights, other.get_input_embeddings().weight)


def test_init_tiny_llama_rejects_bad_sizes():
    tokenizer = build_countdown_tokenizer()
    with pytest.raises(ValueError, match="hidden_size=30 must be divisible by num_attention_heads=4"):
        init_tiny_llama(tokenizer, hidden_size=30, num_attention_heads=4)
    with pytest.raises(ValueError, match="num_key_value_heads=3"):
        init_tiny_llama(tokenizer, hidden_size=32, num_attention_heads=4, num_key_value_heads=3)


def test_save_is_atomic_and_refuses_existing(tmp_path):
    tokenizer = build_countdown_tokenizer()
    model = init_tiny_llama(tokenizer, **SMALL)
    out = tmp_path / "init"
    save_model_and_tokenizer(model, tokenizer, out)
    loaded = AutoModelForCausalLM.from_pretrained(out)
    assert torch.equal(loaded.get_input_embeddings().weight, model.get_input_embeddings().weight)
    assert loaded.generation_config.eos_token_id == tokenizer.eos_token_id
    with pytest.raises(FileExistsError, match="already exists.*--overwrite"):
        save_model_and_tokenizer(model, tokenizer, out)

    class Boom(RuntimeError):
        pass

    def fail(*args, **kwargs):
        raise Boom()

    tokenizer.save_pretrained = fail  # fails after the model files were written into the temporary folder
    with pytest.raises(Boom):
        save_model_and_tokenizer(model, tokenizer, out, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["init"]  # no temporary folder left behind
    assert AutoModelForCausalLM.from_pretrained(out) is not None  # the previous model is intact


def test_init_model_errors(tmp_path):
    with pytest.raises(ValueError, match="Could not load the tokenizer '.*missing-tok'.*--tokenizer countdown"):
        init_model(InitModelArguments(output_dir=str(tmp_path / "m"), tokenizer=str(tmp_path / "missing-tok")))
    (tmp_path / "exists").mkdir()
    with pytest.raises(FileExistsError, match="exists"):
        init_model(InitModelArguments(output_dir=str(tmp_path / "exists")))
    assert not (tmp_path / "m").exists()


def test_init_model_extends_existing_tokenizer_and_model(tmp_path):
    base = tmp_path / "base"
    init_model(InitModelArguments(output_dir=str(base), **SMALL))
    # A folder holding a tokenizer with <backtrack> already: extending it is a no-op on the vocabulary.
    out = tmp_path / "extended"
    init_model(InitModelArguments(output_dir=str(out), tokenizer=str(base), model_name_or_path=str(base)))
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert require_backtrack_token(tokenizer) == 4
    a = AutoModelForCausalLM.from_pretrained(base).get_input_embeddings().weight
    b = AutoModelForCausalLM.from_pretrained(out).get_input_embeddings().weight
    assert torch.equal(a, b)


def test_init_model_recipe_with_config(tmp_path):
    config = tmp_path / "init_model.yaml"
    config.write_text(
        f"output_dir: {tmp_path / 'init'}\ntokenizer: countdown\nhidden_size: 32\nintermediate_size: 64\n"
        "num_hidden_layers: 1\nnum_attention_heads: 2\nmax_position_embeddings: 96\nseed: 1\n"
    )
    result = _run("recipes/init_model.py", "--config", str(config), "--num_hidden_layers", "2")
    assert result.returncode == 0, result.stderr
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "init")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "init")
    assert model.config.num_hidden_layers == 2  # CLI overrides the YAML
    assert model.config.hidden_size == 32 and model.config.max_position_embeddings == 96
    assert model.config.vocab_size == len(tokenizer)
    prompt = tokenizer("###Question: numbers [1, 2, 3]->target 6\n###Response:\n", return_tensors="pt")
    output = model.generate(**prompt, max_new_tokens=3, do_sample=False)
    assert output.shape == (1, prompt["input_ids"].shape[1] + 3) or tokenizer.eos_token_id in output[0].tolist()

    again = _run("recipes/init_model.py", "--config", str(config))
    assert again.returncode != 0 and "already exists" in again.stderr and "--overwrite" in again.stderr


@pytest.mark.parametrize("script", ["recipes/init_model.py", "recipes/build_dataset.py"])
def test_recipe_help(script):
    result = _run(script, "--help")
    assert result.returncode == 0, result.stderr
    assert "--output_dir" in result.stdout and "--overwrite" in result.stdout


def test_every_random_llama_option_reaches_init_tiny_llama():
    import dataclasses
    import inspect

    from backtrack_trl.training.model_init import LLAMA_OPTIONS

    parameters = set(inspect.signature(init_tiny_llama).parameters) - {"tokenizer"}
    assert set(LLAMA_OPTIONS) == parameters
    assert set(LLAMA_OPTIONS) <= {f.name for f in dataclasses.fields(InitModelArguments)}
