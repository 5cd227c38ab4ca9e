"""The stage framework: what a stage is (`stage`), its key (`keys`), the runner (`runner`), the list
of stages (`registry`) and reading stage inputs (`inputs`)."""
