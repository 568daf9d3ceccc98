"""latentqa: latent-bottleneck context compression for retrieval-augmented QA on HotpotQA.

    import latentqa
    reader = latentqa.load_reader("runs/NAME/best")            # a reader folder, or a Hub id
    reader.answer("Who wrote it?", [("Title", ["A sentence.", "Another one."])])
"""
from __future__ import annotations

__all__ = ["load_reader", "ReaderPipeline", "Answer", "SpRule"]


def __getattr__(name: str):
    # imported on first use: `latentqa --help` and the config code need no torch
    if name in __all__:
        from .serving import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'latentqa' has no attribute {name!r}")
