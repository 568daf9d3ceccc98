"""The context-state cache: same losses as running the frozen encoder, never stale, bounded, shared through disk."""
import pytest
import torch

from latentqa.readers.state_cache import ContextStateCache
from tests.conftest import collate


@pytest.fixture
def frozen(tiny_models):
    from latentqa.readers.latent import LatentConfig, LatentReader

    torch.manual_seed(0)
    t5_dir, encoder_dir = tiny_models
    reader = LatentReader.build(str(t5_dir), str(encoder_dir), LatentConfig(
        num_latents=4, selector_heads=4, gate_init=1.0, question_conditioning="latents", sp_scorer="classifier"))
    reader.freeze_encoder()
    return reader


def _count_windows(encoder) -> list[int]:
    """Windows the encoder ran on, per call (the question's own short window counts as a call too)."""
    calls: list[int] = []
    encoder.register_forward_pre_hook(lambda module, args, kwargs: calls.append(kwargs["input_ids"].shape[0]),
                                      with_kwargs=True)
    return calls


@pytest.mark.parametrize("states,tolerance", [("fp32", 1e-5), ("fp16", 2e-2), ("int8", 5e-2)])
def test_training_from_cached_states_gives_the_frozen_encoders_loss(frozen, sample_examples, states, tolerance):
    reader = frozen.train()
    assert not reader.encoder.training  # frozen: no dropout, so its states are a function of the window
    batch, _ = collate(reader, sample_examples[:3])
    torch.manual_seed(1)
    direct = reader(batch)
    reader.use_state_cache(ContextStateCache(max_mb=64, states=states))
    for _ in range(2):  # first pass fills the cache, second reads it
        torch.manual_seed(1)  # the same dropout masks in the selector, scorer and T5
        cached = reader(batch)
        torch.testing.assert_close(cached.loss, direct.loss, rtol=tolerance, atol=tolerance)
        torch.testing.assert_close(cached.auxiliary["sp_scorer_loss"], direct.auxiliary["sp_scorer_loss"], rtol=tolerance, atol=tolerance)
    cached.loss.backward()
    assert reader.selector.latents.grad is not None
    windows = batch["window_ids"].shape[0]
    assert reader.state_cache.stats()["hits"] == windows and reader.state_cache.stats()["misses"] == windows


def test_a_warm_cache_runs_the_encoder_on_the_question_only(frozen, sample_examples):
    reader = frozen.eval()
    reader.use_state_cache(ContextStateCache(max_mb=64, states="fp32"))
    batch, _ = collate(reader, sample_examples[:2])
    calls = _count_windows(reader.encoder)
    reader.generate(batch, max_new_tokens=3)
    assert sorted(calls) == sorted([batch["window_ids"].shape[0], 2])  # the windows, then the 2 questions
    calls.clear()
    reader.generate(batch, max_new_tokens=3)
    assert calls == [2]


def test_changed_encoder_weights_never_get_old_states(frozen, sample_examples):
    reader = frozen.eval()
    reader.use_state_cache(ContextStateCache(max_mb=64, states="fp32"))
    batch, _ = collate(reader, sample_examples[:2])
    before = reader.context_states(batch)
    weight = reader.encoder.embeddings.word_embeddings.weight
    with torch.no_grad():
        weight.add_(0.5)  # in place, as an optimizer step or load_state_dict writes
    after = reader.context_states(batch)
    reader.use_state_cache(None)
    torch.testing.assert_close(after, reader.context_states(batch), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(before, after)
    saved = {k: v.clone() for k, v in reader.encoder.state_dict().items()}
    cache = ContextStateCache(max_mb=64, states="fp32")
    reader.use_state_cache(cache)
    reader.context_states(batch)
    with torch.no_grad():
        weight.sub_(0.5)
    reader.encoder.load_state_dict(saved)  # back to the weights the cache saw: its states are served again
    hits = cache.hits
    torch.testing.assert_close(reader.context_states(batch), after)
    assert cache.hits == hits + batch["window_ids"].shape[0]


def test_cache_refuses_a_trainable_encoder(tiny_latent):
    with pytest.raises(ValueError, match="being trained"):
        tiny_latent.use_state_cache(ContextStateCache(max_mb=1))


def test_memory_bound_and_disk_store(frozen, sample_examples, tmp_path):
    reader = frozen.eval()
    batch, _ = collate(reader, sample_examples[:4])
    small = ContextStateCache(max_mb=0.05, states="fp32")  # 52 KB: room for about one window
    reader.use_state_cache(small)
    first = reader.context_states(batch)
    assert small.bytes <= small.max_bytes and len(small.entries) < batch["window_ids"].shape[0]

    disk = ContextStateCache(max_mb=64, directory=tmp_path / "states", states="fp32")
    reader.use_state_cache(disk)
    torch.testing.assert_close(reader.context_states(batch), first)
    assert len(list((tmp_path / "states").rglob("*.safetensors"))) == batch["window_ids"].shape[0]
    later = ContextStateCache(max_mb=64, directory=tmp_path / "states", states="fp32")  # another run
    reader.use_state_cache(later)
    assert torch.equal(reader.context_states(batch), first)
    assert later.disk_hits == later.hits == batch["window_ids"].shape[0] and later.misses == 0


def test_one_encoder_saved_in_two_folders_has_one_fingerprint(frozen, tmp_path):
    """The cache and the index (`latentqa index`) key states by the fingerprint: where a reader folder lies must
    not change it, a weight must."""
    from latentqa.readers.loading import load_reader_folder
    from latentqa.readers.state_cache import encoder_fingerprint

    prints = [encoder_fingerprint(load_reader_folder(frozen.save_pretrained(tmp_path / name)).encoder) for name in "ab"]
    assert prints[0] == prints[1] == encoder_fingerprint(frozen.encoder)
    with torch.no_grad():
        frozen.encoder.embeddings.word_embeddings.weight[0, 0] += 1
    assert encoder_fingerprint(frozen.encoder) != prints[0]


def test_an_int8_cache_holds_about_half_of_fp16_s_bytes_beside_it_in_one_folder(frozen, sample_examples, tmp_path):
    reader = frozen.eval()
    batch, _ = collate(reader, sample_examples[:2])
    caches = {}
    for states in ("fp16", "int8", "fp16"):
        caches[states] = ContextStateCache(max_mb=64, directory=tmp_path, states=states)
        reader.use_state_cache(caches[states])
        reader(batch)
    assert caches["int8"].disk_hits == 0 < caches["int8"].misses  # fp16's files are not int8's
    assert caches["fp16"].disk_hits == caches["int8"].misses and caches["fp16"].misses == 0  # and stay whole
    width = reader.encoder.config.hidden_size
    assert caches["int8"].bytes / caches["fp16"].bytes == pytest.approx((width + 2) / (2 * width))
    with pytest.raises(ValueError, match="fp32, fp16, int8"):
        ContextStateCache(max_mb=1, states="int8-pca16")

