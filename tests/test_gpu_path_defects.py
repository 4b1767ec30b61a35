"""Issue 14: defects of the GPU code paths and of Llama-3-style tokenizers, each reproduced on CPU.

Every test here failed before its fix (or documents that an earlier fix already holds; see the issue's closing note).
"""

from __future__ import annotations

import gc
import weakref
from pathlib import Path

import pytest
import torch


REPO = Path(__file__).resolve().parents[1]


# -- item 4: the study passes --num_processes; the GPU accelerate configs match the documented 4 GPUs ---------------
def _study_for_commands(tmp_path, **options):
    """The study's sub-recipe launcher (building a real Study checks every sub-config)."""
    from backtrack_trl.study.commands import RecipeLauncher
    from backtrack_trl.study.config import SelfImproveArguments

    return RecipeLauncher.from_args(SelfImproveArguments(output_dir=str(tmp_path), **options), tmp_path, "python")


def test_study_passes_num_processes_to_every_launch(tmp_path, monkeypatch):
    from backtrack_trl.study import commands as self_improve

    commands = []
    monkeypatch.setattr(self_improve, "run_logged", lambda cmd, log, fds=(): commands.append(cmd))
    study = _study_for_commands(tmp_path, num_processes=4, eval_accelerate_config="accelerate_configs/ddp.yaml")
    study.run("sft.py", "c.yaml", {}, tmp_path / "sft.log", launch=True)
    study.run("evaluate_decoders.py", "e.yaml", {}, tmp_path / "eval.log", launch=True)
    study.run("build_dataset.py", "d.yaml", {}, tmp_path / "data.log")  # not launched: no accelerate options
    for cmd in commands[:2]:
        assert cmd[cmd.index("--num_processes") + 1] == "4"
        script = next(i for i, part in enumerate(cmd) if part.endswith(".py"))
        assert cmd.index("--num_processes") < script  # a launcher option, before the script
    assert "--num_processes" not in commands[2]
    commands.clear()
    # unset: the accelerate config's count
    _study_for_commands(tmp_path).run("sft.py", "c.yaml", {}, tmp_path / "sft.log", launch=True)
    assert "--num_processes" not in commands[0]
    with pytest.raises(ValueError, match="num_processes"):
        _study_for_commands(tmp_path, num_processes=0)


@pytest.mark.parametrize("name", ["ddp", "zero2", "zero3", "fsdp"])
def test_gpu_accelerate_configs_match_the_documented_four_gpus(name):
    import yaml

    config = yaml.safe_load((REPO / "accelerate_configs" / f"{name}.yaml").read_text())
    # The Llama recipes: 16 per device x 4 GPUs = the paper's global batch of 64.
    assert config["num_processes"] == 4


# -- item 6: `--optimal_data_config None` disables the baseline; the harvest frees GPU memory -------------------------
def test_none_on_the_command_line_disables_an_optional_config():
    from trl import TrlParser

    from backtrack_trl.study.config import SelfImproveArguments

    (args,) = TrlParser(SelfImproveArguments).parse_args_and_config(
        args=["--optimal_data_config", "None", "--optimal_sft_config", "none", "--init_model_config", "null"]
    )
    assert args.optimal_data_config is None and args.optimal_sft_config is None and args.init_model_config is None
    assert args.backtrack_data_config == SelfImproveArguments().backtrack_data_config  # required ones untouched


def test_harvest_frees_the_decoder_and_empties_the_cuda_cache(tmp_path, monkeypatch):
    import backtrack_trl.decoding as decoding
    from backtrack_trl.decoding.results import SearchResult
    from backtrack_trl.study.harvest import EmptyHarvestError, harvest

    alive, emptied = [], []

    class FakeDecoder:
        @classmethod
        def from_pretrained(cls, path, device=None, **options):
            decoder = cls()
            alive.append(weakref.ref(decoder))
            return decoder

        def solve(self, problems, **kwargs):
            return [SearchResult(prompt="p", completion="", candidates=[]) for _ in problems]

    def empty_cache():
        gc.collect()
        emptied.append(alive[0]() is None)  # the decoder (and its model) is gone when the cache is emptied

    monkeypatch.setattr(decoding, "SelfBacktrackingDecoder", FakeDecoder)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "empty_cache", empty_cache)
    with pytest.raises(EmptyHarvestError):
        harvest(tmp_path / "model", [{"numbers": [3, 5, 2], "target": 16}], tmp_path / "rounds", "round_1", {"n": 2},
                progress=False)  # fmt: skip
    assert emptied == [True]


# -- item 3: the collator's counters survive DataLoader worker processes ----------------------------------------------
def test_collator_counters_survive_dataloader_workers():
    from _training_utils import sample_rows

    from backtrack_trl.tasks.tokenizer import build_countdown_tokenizer
    from backtrack_trl.training.collator import BacktrackMaskingCollator

    rows = sample_rows(6)  # 12 rows
    # max_length=10 cuts every example inside its prompt: all are truncated and none has a trained token.
    collator = BacktrackMaskingCollator(build_countdown_tokenizer(), max_length=10)
    loader = torch.utils.data.DataLoader(rows, batch_size=4, num_workers=2, collate_fn=collator)
    assert sum(len(batch["input_ids"]) for batch in loader) == 12
    # The recipes' dataloader_num_workers: 2 ran the collator in the workers; the main process read 0 before.
    assert (collator.num_examples, collator.num_truncated, collator.num_untrained) == (12, 12, 12)
    collator([rows[0]])  # and in the main process, added to the same totals
    assert (collator.num_examples, collator.num_truncated, collator.num_untrained) == (13, 13, 13)


# -- item 1: beam on a trust_remote_code folder reaches the stock generate --------------------------------------------
def test_beam_decoder_on_a_remote_code_model_reaches_the_stock_generate(tmp_path):
    from _decoding_utils import PROMPT_8, tiny_llama, tokenizer
    from transformers import AutoModelForCausalLM

    from backtrack_trl.decoding import BeamSearchDecoder
    from backtrack_trl.decoding.custom_generate_writer import write_custom_generate
    from backtrack_trl.training.model_init import save_model_and_tokenizer

    tok, folder = tokenizer(), tmp_path / "model"
    save_model_and_tokenizer(tiny_llama(hidden_size=32, layers=1, biased=True), tok, folder)
    write_custom_generate(folder)
    remote = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)
    assert getattr(remote.generate, "__func__", None) is not type(remote).generate  # the folder's search
    plain = AutoModelForCausalLM.from_pretrained(folder)
    got = BeamSearchDecoder(remote, tok, n=3, max_new_tokens=12).solve([PROMPT_8])[0]  # was TypeError 'num_beams'
    expected = BeamSearchDecoder(plain, tok, n=3, max_new_tokens=12).solve([PROMPT_8])[0]
    assert got.completion and [c.text for c in got.candidates] == [c.text for c in expected.candidates]


# -- item 2: the goal marker is found through a merged "!\n" token (greedy, sampling, beam) --------------------------
def _runaway_policy(prompt, lines):
    """The marker is written as one line with a newline after it (one `!\\n\\n` token); a model that is not stopped
    there writes on ("Reached!" and <backtrack>), as the greedy run of the issue did."""
    from _decoding_utils import BT, GOAL

    table = {(): {"10-8=2": 1.0}, ("10-8=2",): {"5*2=10": 1.0}, ("10-8=2", "5*2=10"): {GOAL + "\n": 1.0}}
    return table.get(tuple(lines), {"Reached!": 0.6, BT: 0.4})


@pytest.mark.parametrize("method, options", [("greedy", {}), ("best_of_n", {"n": 2}), ("beam", {"n": 2})])
def test_every_decoder_stops_at_a_goal_marker_merged_with_its_newline(method, options):
    from _decoding_utils import llama3_style_tokenizer
    from _scripted_lm import ScriptedLM

    from backtrack_trl.decoding import decode
    from backtrack_trl.tasks.countdown.format import Problem, format_prompt

    tok = llama3_style_tokenizer()
    assert [tok.decode([i]) for i in tok("Goal Reached!\n\n", add_special_tokens=False)["input_ids"]][-1] == "!\n\n"
    model = ScriptedLM.build(tok, _runaway_policy)
    result = decode(model, tok, [format_prompt(Problem((10, 8, 5), 10))], method=method, max_new_tokens=40, **options)
    assert result[0].completion == "10-8=2\n5*2=10\nGoal Reached!\n\n" and result[0].chosen.end_reason == "goal"
    if method != "beam":  # the other beams are forced down impossible tokens (the scripted model has one path)
        assert {c.end_reason for c in result[0].candidates} == {"goal"}


# -- item 6: saved models decode greedily; a vocabulary padded to a multiple of 64 is never sampled past the tokenizer
def test_saved_generation_config_drops_the_base_models_sampling_defaults(tmp_path):
    from _decoding_utils import tiny_llama, tokenizer
    from transformers import GenerationConfig

    from backtrack_trl.training.model_loading import configure_generation

    model = tiny_llama(hidden_size=16, layers=1)
    # Llama-3.2's generation_config.json: do_sample true, temperature 0.6, top_p 0.9.
    model.generation_config.update(do_sample=True, temperature=0.6, top_p=0.9, top_k=20)
    configure_generation(model, tokenizer())
    model.generation_config.save_pretrained(tmp_path)
    saved = GenerationConfig.from_pretrained(tmp_path)
    assert saved.do_sample is False
    assert (saved.temperature, saved.top_p, saved.top_k) == (None, None, None)
    assert saved.eos_token_id == tokenizer().eos_token_id and saved.pad_token_id == tokenizer().pad_token_id


def test_training_pads_the_resized_vocabulary_to_a_multiple_of_64():
    from _decoding_utils import tiny_llama, tokenizer

    from backtrack_trl.training.model_loading import ensure_backtrack_token

    tok = tokenizer()
    model = tiny_llama(hidden_size=16, layers=1)
    model.resize_token_embeddings(len(tok) - 1)  # a base model without the <backtrack> row (like 128,256 + 1)
    old = model.get_input_embeddings().weight.detach().clone()
    ensure_backtrack_token(tok, model)
    rows = model.get_input_embeddings().weight.shape[0]
    assert rows % 64 == 0 and rows >= len(tok) and model.config.vocab_size == rows
    new = model.get_input_embeddings().weight
    assert torch.equal(new[: len(tok) - 1], old)
    assert torch.allclose(new[len(tok) - 1], old.mean(0))  # <backtrack> starts as the mean row


def _padded_model():
    """A tiny Llama whose vocabulary is padded to a multiple of 64 past the tokenizer, with the padding ids' logits
    far above every real token's (an untrained padding row can be anything)."""
    from _decoding_utils import BiasedLlama, tiny_llama, tokenizer

    tok = tokenizer()
    model = tiny_llama(hidden_size=16, layers=1)
    model.resize_token_embeddings(len(tok), pad_to_multiple_of=64)
    padded = BiasedLlama(model.config)
    padded.load_state_dict(model.state_dict())
    padded.generation_config = model.generation_config
    padded.logit_bias = torch.zeros(model.config.vocab_size)
    padded.logit_bias[len(tok) :] = 30.0
    return padded.eval(), tok


@pytest.mark.parametrize(
    "method, options",
    [("greedy", {}), ("self_backtracking", {"n": 2, "b": 1}), ("best_of_n", {"n": 2}), ("beam", {"n": 2}),
     ("released", {"n": 2, "b": 1})],
)  # fmt: skip
def test_decoders_never_emit_the_padding_ids_of_a_padded_vocabulary(method, options):
    from _decoding_utils import PROMPT_8

    from backtrack_trl.decoding import decode

    model, tok = _padded_model()
    assert model.config.vocab_size > len(tok)
    length = {"max_length": 40} if method == "released" else {"max_new_tokens": 8}
    result = decode(model, tok, [PROMPT_8], method=method, seed=1, **length, **options)[0]
    assert result.candidates
    for candidate in result.candidates:
        assert max(tok(candidate.text, add_special_tokens=False)["input_ids"], default=0) < len(tok)
        assert candidate.num_tokens > 0


# -- item 5: GPU decoding (memory of beam, sampling precision and cost, host syncs, device, dtype) ------------------
def test_beam_generate_calls_are_capped_so_their_logits_fit_the_budget(monkeypatch):
    from _decoding_utils import PROMPT, PROMPT_8, scripted, tokenizer

    from backtrack_trl.decoding import BeamSearchDecoder, beam
    from backtrack_trl.decoding.beam import beam_rows_per_call

    # Llama-3's vocabulary, beam:n=16, 64 steps: 8 problems (128 rows, 4.2 GB of logits) per call, not 64 (34 GB).
    assert beam_rows_per_call(16, 64, 128_320) == 128
    assert beam_rows_per_call(16, 64, 128_320, budget=1) == 16  # never less than one problem
    rows, original = [], beam.stock_generate
    monkeypatch.setattr(
        beam, "stock_generate", lambda model, **kw: rows.append(len(kw["input_ids"])) or original(model, **kw)
    )
    model, prompts = scripted({}), [PROMPT, PROMPT_8] * 3
    decoder = BeamSearchDecoder(model, tokenizer(), n=2, max_new_tokens=8, batch_size=6)
    expected = decoder.solve(prompts)
    assert rows == [6]
    rows.clear()
    decoder.engine.logits_budget_bytes = 2 * 2 * 8 * len(tokenizer()) * 4  # two problems of 2 beams, 8 steps
    got = decoder.solve(prompts)
    assert rows == [2, 2, 2]
    assert [[c.to_dict() for c in r.candidates] for r in got] == [
        [c.to_dict() for c in r.candidates] for r in expected
    ]


def test_beam_default_batch_follows_the_number_of_beams():
    from _decoding_utils import scripted, tokenizer

    from backtrack_trl.decoding import BeamSearchDecoder

    assert BeamSearchDecoder(scripted({}), tokenizer(), n=16).batch_size == 16
    assert BeamSearchDecoder(scripted({}), tokenizer(), n=64).batch_size == 4


def test_blocked_sampler_of_large_vocabularies_matches_the_distribution_and_keeps_the_tail():
    from backtrack_trl.decoding.sampling import EXACT_VOCAB, sample_from_scores

    vocab = 9_003  # above EXACT_VOCAB, not a multiple of the block
    assert vocab > EXACT_VOCAB
    probs = torch.zeros(vocab, dtype=torch.float64)
    heavy = {0: 0.3, 257: 0.25, 4_999: 0.2, vocab - 1: 0.149}
    for token, p in heavy.items():
        probs[token] = p
    tail = torch.arange(5_000, 8_000)  # 3,000 tokens of 0.1% together
    probs[tail] = 0.001 / len(tail)
    probs[1:257] = 0.1 / 256
    probs /= probs.sum()
    scores = torch.where(probs > 0, probs.log(), torch.full_like(probs, -float("inf"))).float()
    draws = 20_000
    uniforms = (torch.arange(draws, dtype=torch.float64) + 0.5) / draws  # stratified: counts are nearly exact
    tokens = torch.cat([sample_from_scores(scores.expand(1_000, vocab), u) for u in uniforms.split(1_000)])
    counts = torch.bincount(tokens, minlength=vocab).double() / draws
    assert counts[probs == 0].sum() == 0  # zero-mass ids (and the padded block) are never drawn
    for token in heavy:
        assert abs(counts[token] - probs[token]) < 1e-4
    assert abs(counts[tail].sum() - probs[tail].sum()) < 1e-4


def test_small_vocabularies_keep_the_float64_sampler_bit_for_bit():
    from backtrack_trl.decoding.sampling import row_uniforms, sample_from_scores

    generator = torch.Generator().manual_seed(0)
    scores = torch.randn(64, 110, generator=generator)
    uniforms = row_uniforms(torch.arange(64)[:, None], step=3)
    probs = torch.softmax(scores.double(), -1)
    cdf = probs.cumsum(-1)
    expected = torch.searchsorted(cdf, (uniforms * cdf[:, -1])[:, None], right=True).squeeze(-1)
    assert torch.equal(sample_from_scores(scores, uniforms), expected)


def test_engine_reads_the_device_once_or_twice_per_step_not_per_finished_row(monkeypatch):
    import sys

    from _decoding_utils import PROMPT, PROMPT_8, tiny_llama, tokenizer

    from backtrack_trl.decoding import BestOfNDecoder

    reads = []
    for name in ("tolist", "item", "__bool__", "__int__", "__index__"):
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _original=original, **kwargs):
            if sys._getframe(1).f_code.co_filename.endswith("engine.py"):
                reads.append(1)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    decoder = BestOfNDecoder(tiny_llama(hidden_size=16, layers=1, biased=True), tokenizer(), n=16, max_new_tokens=12)
    results = decoder.solve([PROMPT, PROMPT_8])
    monkeypatch.undo()
    steps = max(r.forward_passes for r in results) - 1  # minus the prefill
    finished = sum(len(r.candidates) for r in results)
    assert finished >= 16  # many rows finished (one host read per finished row would exceed the bound)
    assert len(reads) <= 3 * steps + 8, (len(reads), steps)


@pytest.mark.parametrize("top_p, spread", [(0.9, 3.0), (0.5, 1.0), (0.95, 0.01)], ids=["peaked", "medium", "flat"])
def test_top_p_of_large_vocabularies_keeps_the_same_tokens_as_the_sort(top_p, spread):
    from transformers import TopPLogitsWarper

    from backtrack_trl.decoding.sampling import EXACT_VOCAB, warp_scores

    generator = torch.Generator().manual_seed(1)
    scores = torch.randn(8, EXACT_VOCAB + 1000, generator=generator) * spread  # "flat": the sort fallback
    expected = TopPLogitsWarper(top_p)(None, scores.clone())
    got = warp_scores(scores, top_p=top_p)
    assert torch.equal(torch.isinf(got), torch.isinf(expected))
    assert torch.equal(got[~torch.isinf(got)], scores[~torch.isinf(got)])


def test_decoder_from_pretrained_picks_the_gpu_when_there_is_one(monkeypatch):
    from backtrack_trl.decoding import SelfBacktrackingDecoder, api

    asked = []

    def load(path, device=None, dtype=None):
        asked.append(device)
        raise RuntimeError("stop here")  # only the device matters

    monkeypatch.setattr(api, "load_model_and_tokenizer", load)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    for device in ("auto", None, "cpu"):
        with pytest.raises(RuntimeError, match="stop here"):
            SelfBacktrackingDecoder.from_pretrained("folder", device=device)
    with pytest.raises(RuntimeError, match="stop here"):
        SelfBacktrackingDecoder.from_pretrained("folder")
    assert asked == ["cuda", "cuda", "cpu", "cuda"]  # was None: the model stayed on CPU on a GPU machine


def test_evaluation_cuda_means_this_processs_own_gpu():
    from types import SimpleNamespace

    from backtrack_trl.evaluation.run import process_device

    state = SimpleNamespace(local_process_index=3, device="accelerate's")
    assert process_device("cuda", state) == "cuda:3"  # was cuda (= cuda:0) on every rank
    assert process_device("cuda:1", state) == "cuda:1" and process_device("cpu", state) == "cpu"
    assert process_device(None, state) == "accelerate's"


def test_evaluation_dtype_option_loads_the_weights_in_that_dtype(tmp_path):
    from _decoding_utils import tiny_llama, tokenizer

    from backtrack_trl.decoding.api import load_model_and_tokenizer, resolve_dtype
    from backtrack_trl.evaluation import EvaluationArguments
    from backtrack_trl.training.model_init import save_model_and_tokenizer

    assert EvaluationArguments(dtype="bfloat16").dtype == "bfloat16"
    with pytest.raises(ValueError, match="dtype must be"):
        EvaluationArguments(dtype="fp8")
    assert resolve_dtype("auto", "cpu") == torch.float32 and resolve_dtype("auto", "cuda:0") == "auto"
    save_model_and_tokenizer(tiny_llama(hidden_size=16, layers=1), tokenizer(), tmp_path / "m")
    model, _ = load_model_and_tokenizer(str(tmp_path / "m"), device="cpu", dtype="bfloat16")
    assert next(model.parameters()).dtype == torch.bfloat16


def test_released_decoder_ignores_the_models_sampling_defaults():
    from _decoding_utils import PROMPT, PROMPT_8, tiny_llama, tokenizer

    from backtrack_trl.decoding import ReleasedSelfBacktrackingDecoder

    model, options = tiny_llama(hidden_size=32, layers=1, biased=True), {"n": 3, "b": 1, "max_length": 40, "seed": 7}
    expected = ReleasedSelfBacktrackingDecoder(model, tokenizer(), **options).solve([PROMPT, PROMPT_8])
    model.generation_config.update(do_sample=True, temperature=0.6, top_p=0.5, min_p=0.3)  # a base model's defaults
    got = ReleasedSelfBacktrackingDecoder(model, tokenizer(), **options).solve([PROMPT, PROMPT_8])
    assert [[c.text for c in r.candidates] for r in got] == [[c.text for c in r.candidates] for r in expected]
