"""Training recipes on TRL: judge and rejection-sampling SFT, policy DPO and STaR-DPO, reward heads.

A recipe takes a base model (an alias such as `packaged`/`tiny` or a local `save_pretrained` directory),
a `datasets.Dataset`, an output directory and a typed config; it trains with a TRL trainer, saves a
plain `save_pretrained` model (LoRA adapters merged) with its tokenizer and a `training_log.json`,
and returns a `TrainResult`. Recipes know nothing of Prefect or the SQL store.

Modules: `config` (pydantic recipe configs that build `trl.SFTConfig`/`trl.DPOConfig` for a resolved
`Runtime`), `sft` (`train_sft`), `dpo` (`train_dpo`, `train_star_dpo`), `reward` (`train_reward_head`,
with `reward_config`, `reward_trainer`: TRL's RewardTrainer plus GRM, MORE and ODIN, and `min_norm`: MORE's
solver), `common` (model loading, hardware choices, loss logging, saving), `deepspeed` (the
generated ZeRO-3 config for GPU runs).
"""
