"""The stages, one module each; each declares itself in a `runtime.stage.Stage` object (`STAGE`).

The list of stages is `runtime.registry.STAGES`."""
