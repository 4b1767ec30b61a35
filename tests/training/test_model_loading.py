"""backtrack_trl.training.model_loading: LoRA configs that train the embeddings and LM head so <backtrack> learns."""

import pytest
from _training_utils import char_tokenizer
from trl import ModelConfig

from backtrack_trl.training.model_loading import lora_config_for_new_tokens


def test_lora_trains_embeddings_and_lm_head():
    from _training_utils import tiny_llama

    model = tiny_llama(char_tokenizer(), tie=True)
    config = lora_config_for_new_tokens(ModelConfig(use_peft=True, lora_target_modules=["q_proj", "v_proj"]), model)
    assert {"embed_tokens", "lm_head"} <= set(config.modules_to_save) and config.ensure_weight_tying
    assert lora_config_for_new_tokens(ModelConfig(use_peft=False), model) is None
    with pytest.raises(ValueError, match="lm_head"):
        lora_config_for_new_tokens(ModelConfig(use_peft=True, lora_target_modules=["q_proj", "lm_head"]), model)
