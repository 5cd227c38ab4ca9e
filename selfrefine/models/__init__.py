"""The ML layer: everything that touches a language model, and nothing of Prefect or the SQL store.

- `loading`: model names and aliases (`packaged`, `tiny`) to loaded models and tokenizers.
- `dimensions`: verbalised definitions of the preference dimensions.
- `prompts`: every prompt format (absolute, pairwise, Chain-of-Hindsight, controllable generation,
  chain-of-thought judging), few-shot demonstrations and truncation to a token budget.
- `judge_types`: the judge interface: the items a judge scores, its answers, `JudgeProtocol`.
- `judge_info`: the `judge.json` file that says which kind of judge a model directory holds.
- `judge`: the decoder judge: batched scoring (absolute score, pairwise verdicts in both orders,
  CoT majority vote).
- `reward_head`, `reward_judge`: the reward-head judge kind (a scalar head on the backbone's last
  token) and its scoring through the same interface; `sequence_classifier_judge`: a public reward
  model as a judge; `per_dimension_judge`: a judge made of one sub-judge per preference dimension,
  routing each item to its dimension's.
- `judge_kind`: `load_judge`, the factory above the judge classes, which loads whichever kind a
  judge directory's `judge.json` names.
- `judge_modes`: the seed paper's judging tricks (n-shot, CoT self-consistency, tournaments).
- `generation`: the generation backends (transformers; vLLM when installed with a GPU).
- `training`: training recipes on TRL.

Import the submodules directly; this package imports nothing so that `import selfrefine.models`
stays cheap.
"""
