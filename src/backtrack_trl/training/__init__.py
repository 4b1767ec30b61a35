"""Training: the backtrack-masking collator, SFT, DPO/KTO, the outcome reward model, model init and tokenizers."""
