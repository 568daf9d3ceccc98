"""The context-state cache under faults: repeated windows, bad entries on disk, a full disk, two processes on one
folder; and a fingerprint computed once per weight change."""
import errno
import logging
import subprocess
import sys

import pytest
import torch
from transformers import AutoModel

from latentqa.readers import state_cache
from latentqa.readers.state_cache import ContextStateCache, encoder_fingerprint


@pytest.fixture
def encoder(tiny_models):
    return AutoModel.from_pretrained(str(tiny_models[1])).eval().requires_grad_(False)


def _windows(rows: list[list[int]], width: int = 12):
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, :len(row)], mask[i, :len(row)] = torch.tensor(row), 1
    return ids, mask


def _rows_encoded(encoder) -> list[int]:
    calls: list[int] = []
    encoder.register_forward_pre_hook(lambda m, args, kwargs: calls.append(kwargs["input_ids"].shape[0]),
                                      with_kwargs=True)
    return calls


SHARED = [[2, 11, 12, 13, 3], [2, 21, 22, 3], [2, 31, 32, 33, 34, 3]]


def test_repeated_windows_are_encoded_and_counted_once(encoder):
    """Eight questions over one context: each distinct window encoded once, stored once, its bytes counted once."""
    calls = _rows_encoded(encoder)
    cache = ContextStateCache(max_mb=1)
    ids, mask = _windows(SHARED * 8)
    states = cache.encode(encoder, ids, mask)
    assert sum(calls) == 3 and len(cache.entries) == 3
    held = lambda: sum(t.numel() * t.element_size() for entry in cache.entries.values() for t in entry.values())
    assert cache.bytes == held()
    for copy in range(1, 8):  # every copy got its window's states
        torch.testing.assert_close(states[3 * copy:3 * copy + 3], states[:3])
    cache.encode(encoder, ids, mask)
    assert sum(calls) == 3 and cache.bytes == held()
    small = ContextStateCache(max_mb=cache.bytes / 2**20)  # room for the three windows, no more
    small.encode(encoder, ids, mask)
    assert len(small.entries) == 3  # was 0: each copy added its size again and pushed everything out


def test_the_fingerprint_is_computed_once_per_weight_change(encoder, monkeypatch):
    computed = []
    monkeypatch.setattr(state_cache, "encoder_fingerprint", lambda e: computed.append(1) or encoder_fingerprint(e))
    cache = ContextStateCache(max_mb=1)
    ids, mask = _windows(SHARED)
    first = cache.fingerprint(encoder)
    for _ in range(3):
        cache.encode(encoder, ids, mask)
    assert len(computed) == 1
    with torch.no_grad():
        next(encoder.parameters()).add_(1.0)
    assert cache.fingerprint(encoder) != first and len(computed) == 2


def test_the_key_holds_the_encoders_config(tiny_models):
    one = AutoModel.from_pretrained(str(tiny_models[1]))
    other = AutoModel.from_pretrained(str(tiny_models[1]), activation="relu")  # same weights
    assert encoder_fingerprint(one) != encoder_fingerprint(other)


@pytest.mark.parametrize("damage", ["truncated", "empty", "garbage", "wrong shape"])
def test_a_bad_entry_on_disk_is_recomputed_and_rewritten(encoder, tmp_path, damage, caplog):
    ids, mask = _windows(SHARED)
    expected = ContextStateCache(max_mb=1, directory=tmp_path, states="fp32").encode(encoder, ids, mask)
    files = sorted(tmp_path.rglob("*.safetensors"))
    assert len(files) == 3
    if damage == "truncated":
        files[0].write_bytes(files[0].read_bytes()[:40])
    elif damage == "empty":
        files[0].write_bytes(b"")
    elif damage == "garbage":
        files[0].write_bytes(b"\xff" * 200)
    else:
        import safetensors.torch
        safetensors.torch.save_file({"states": torch.zeros(2, 7)}, str(files[0]))
    with caplog.at_level(logging.WARNING):
        again = ContextStateCache(max_mb=1, directory=tmp_path, states="fp32").encode(encoder, ids, mask)
    torch.testing.assert_close(again, expected)
    assert "unreadable" in caplog.text
    fresh = ContextStateCache(max_mb=1, directory=tmp_path, states="fp32")
    torch.testing.assert_close(fresh.encode(encoder, ids, mask), expected)
    assert fresh.disk_hits == 3  # the bad entry was rewritten whole


def test_a_full_disk_turns_the_cache_to_memory_only(encoder, tmp_path, monkeypatch, caplog):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(state_cache.safetensors.torch, "save_file", full)
    cache = ContextStateCache(max_mb=1, directory=tmp_path, states="fp32")
    ids, mask = _windows(SHARED)
    with caplog.at_level(logging.WARNING):
        states = cache.encode(encoder, ids, mask)
        cache.encode(encoder, ids, mask)
    assert caplog.text.count("memory only") == 1 and not cache.writes_to_disk
    assert cache.hits == 3 and not list(tmp_path.rglob("*.safetensors*"))  # no temporary file left either
    monkeypatch.undo()
    torch.testing.assert_close(states, ContextStateCache(max_mb=0, states="fp32").encode(encoder, ids, mask))


WRITER = """
import sys, torch
from transformers import AutoModel
from latentqa.readers.state_cache import ContextStateCache
encoder = AutoModel.from_pretrained(sys.argv[1]).eval()
ids = torch.arange(2, 2 + 40 * 9).reshape(40, 9) % 200 + 5
mask = torch.ones_like(ids)
for _ in range(3):  # each round through a fresh cache object: every read from disk, or computed and written
    states = ContextStateCache(max_mb=0, directory=sys.argv[2], states="fp32").encode(encoder, ids, mask)
torch.save(states, sys.argv[3])
"""


@pytest.mark.slow
def test_two_processes_share_one_cache_folder(tiny_models, tmp_path):
    results = []
    for round_ in range(3):
        folder = tmp_path / f"cache-{round_}"
        outs = [tmp_path / f"{round_}-{i}.pt" for i in range(2)]
        processes = [subprocess.Popen([sys.executable, "-c", WRITER, str(tiny_models[1]), str(folder), str(out)],
                                      stderr=subprocess.PIPE, text=True) for out in outs]
        for process in processes:
            assert process.wait() == 0, process.stderr.read()[-2000:]
        results += [torch.load(out) for out in outs]
        assert len(list(folder.rglob("*.safetensors"))) == 40 and not list(folder.rglob(".*"))
    for other in results[1:]:
        torch.testing.assert_close(other, results[0], rtol=0, atol=0)
