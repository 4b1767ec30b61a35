"""best_of_n with an outcome reward model (``reward_model=``): the planted highest-scored answer wins, the ORM score is
recorded on every candidate, the spec check does not need the folder, and a folder without a score head is refused."""

import pytest
import torch
from _decoding_utils import BT, GOAL, PROMPT_8, scripted, tiny_llama, tokenizer
from transformers import LlamaConfig, LlamaForSequenceClassification

from backtrack_trl.decoding import BestOfNDecoder
from backtrack_trl.decoding.api import check_decoder_options
from backtrack_trl.decoding.reward_scorer import RewardModelScorer
from backtrack_trl.evaluation.specs import check_decoder_specs


# Three goal-reaching answers: by likelihood "5+3=8" (0.6) wins; the planted ORM prefers "8*1=8" (the rarest).
TABLE = {(): {"5+3=8": 0.6, "3+5=8": 0.3, "8*1=8": 0.1, "5-3=2": 0.0}}


class PlantedORM(LlamaForSequenceClassification):
    """A real sequence-classification model whose scalar is planted: 10 per "*" token in the text, minus the length
    (so padding must be handled: the score is read from the attention mask, as the head reads the last real token)."""

    def forward(self, input_ids=None, attention_mask=None, **kwargs):
        output = super().forward(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        star = tokenizer().convert_tokens_to_ids("*")
        planted = 10.0 * ((input_ids == star) & attention_mask.bool()).sum(-1) - 0.01 * attention_mask.sum(-1)
        output.logits = planted[:, None].to(output.logits.dtype)
        return output


def sequence_classifier(cls=LlamaForSequenceClassification, seed: int = 0):
    tok = tokenizer()
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        max_position_embeddings=128, num_labels=1, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )  # fmt: skip
    torch.manual_seed(seed)
    return cls(config).eval()


def test_the_orm_picks_the_planted_highest_scored_answer():
    model = scripted(TABLE)
    plain = BestOfNDecoder(model, tokenizer(), n=64, temperature=1.0).solve([PROMPT_8])[0]
    assert plain.completion == "5+3=8\n" + GOAL
    scorer = RewardModelScorer(sequence_classifier(PlantedORM), tokenizer())
    decoder = BestOfNDecoder(model, tokenizer(), n=64, temperature=1.0, reward_model=scorer)
    result = decoder.solve([PROMPT_8, PROMPT_8], seeds=[0, 0])[0]
    assert result.completion == "8*1=8\n" + GOAL
    assert result.completion_ids is not None and tokenizer().decode(result.completion_ids) == result.completion
    texts = [c.text for c in result.candidates]
    assert texts == [c.text for c in plain.candidates]  # same samples, only the choice changed
    expected = scorer.score([PROMPT_8] * len(texts), texts)
    assert [c.score for c in result.candidates] == pytest.approx(expected)
    assert [c.mean_logprob for c in result.candidates] == pytest.approx([c.mean_logprob for c in plain.candidates])


def test_scores_do_not_depend_on_the_batch_padding():
    model = sequence_classifier()
    texts = ["5+3=8\n" + GOAL, "5-3=2\n" + BT, "8"]
    alone = [RewardModelScorer(model, tokenizer(), batch_size=1).score([PROMPT_8], [t])[0] for t in texts]
    together = RewardModelScorer(model, tokenizer(), batch_size=8).score([PROMPT_8] * 3, texts)
    assert together == pytest.approx(alone, abs=1e-5)


def test_a_reward_model_folder_loads_on_the_decoders_device(tmp_path):
    orm = sequence_classifier(seed=1)
    orm.save_pretrained(tmp_path / "orm")
    tokenizer().save_pretrained(tmp_path / "orm")
    decoder = BestOfNDecoder(scripted(TABLE), tokenizer(), n=8, temperature=1.0, reward_model=str(tmp_path / "orm"))
    result = decoder.solve([PROMPT_8])[0]
    direct = RewardModelScorer(orm, tokenizer()).score([PROMPT_8] * len(result.candidates),
                                                      [c.text for c in result.candidates])  # fmt: skip
    assert [c.score for c in result.candidates] == pytest.approx(direct, abs=1e-5)
    goal = [c for c in result.candidates if c.reached_goal]
    assert result.chosen.score == max(c.score for c in goal)


def test_a_causal_lm_folder_is_refused_with_the_fix(tmp_path):
    tiny_llama(hidden_size=8, layers=1).save_pretrained(tmp_path / "lm")
    with pytest.raises(ValueError, match=r"reward_model=.*lm.*no score head.*recipes/reward_model.py"):
        BestOfNDecoder(scripted(TABLE), tokenizer(), n=4, reward_model=str(tmp_path / "lm"))
    with pytest.raises(ValueError, match="no such folder"):
        BestOfNDecoder(scripted(TABLE), tokenizer(), n=4, reward_model=str(tmp_path / "missing"))


def test_specs_accept_the_option_without_the_folder():
    check_decoder_specs(["best_of_n:n=8,reward_model=results/not-yet-trained/reward-model"])
    with pytest.raises(ValueError, match="reward_model"):
        check_decoder_options("best_of_n", {"reward_model": 3})
    with pytest.raises(ValueError, match="selection"):
        check_decoder_options("best_of_n", {"reward_model": "x", "selection": "vote"})
    with pytest.raises(ValueError, match="unknown option"):
        check_decoder_options("self_backtracking", {"reward_model": "x"})
