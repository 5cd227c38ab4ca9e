"""`selfrefine export`: a stored policy or judge as a standard Hugging Face model directory with a model card.

`targets` finds what an id names (a model artifact, or the final policy and judge of a run,
iteration or stage run) and its lineage; `convert` writes the model directories; `card` writes
the model card; `hub` pushes a directory to the Hugging Face Hub.
"""
