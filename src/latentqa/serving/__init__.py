"""A trained reader put to use: the Python API (`pipeline.py`, exported at the package root as
`latentqa.load_reader`) and the HTTP server on top of it (`app.py`, with `batching.py`)."""
