"""Checkpoints (`training/checkpoints.py`): of Accelerate's warnings on saving, only the expected one (T5's tied
embeddings) is dropped. Saving and resuming exactly are tested end to end in test_trainer.py."""
import logging

from latentqa.training.checkpoints import TiedEmbeddingsNote


def test_only_the_expected_shared_tensor_warning_is_dropped():
    def record(message):
        return logging.LogRecord("accelerate.utils.other", logging.WARNING, __file__, 1, message, None, None)

    note = TiedEmbeddingsNote()
    assert not note.filter(record("[RANK 0] Removed shared tensor {'t5.lm_head.weight', "
                                  "'t5.decoder.embed_tokens.weight'} while saving. This should be OK"))
    assert note.filter(record("[RANK 0] Removed shared tensor {'selector.latents'} while saving."))
    assert note.filter(record("something else"))
