"""The ML layer: everything that touches a language model, and nothing of Prefect or the SQL store.

- `loading`: model names and aliases (`packaged`, `tiny`) to loaded models and tokenizers.
- `dimensions`: verbalised definitions of the preference dimensions.
- `prompts`: every prompt format (absolute, pairwise, Chain-of-Hindsight, controllable generation,
  chain-of-thought judging), few-shot demonstrations and truncation to a token budget.
- `judge`: batched judge scoring (absolute score, pairwise verdicts in both orders, CoT majority vote).
- `reward_head`, `reward_judge`: the reward-head judge kind (a scalar head on the backbone's last
  token) and its scoring through the same interface; `judge_kind`: `load_judge`, which loads
  whichever kind a judge directory's `judge.json` names; `per_dimension_judge`: a judge made of one
  sub-judge per preference dimension, routing each item to its dimension's.
- `generation`: the generation backends (transformers; vLLM when installed with a GPU).
- `training`: training recipes on TRL.

Import the submodules directly; this package imports nothing so that `import selfrefine.models`
stays cheap.
"""
