"""selfrefine: iterative self-improvement of an LLM judge and policy with Prefect and a lineage store."""

__version__ = "0.1.0"
