"""Stored-state formats: int8 rounding within half a level of each token's own scale, a projection that keeps what
lies in its directions, each format read back at the states' full width, names refused in one line."""
import pytest
import torch

from latentqa.readers.state_format import Projection, StateFormat, dequantize, pack_int4, quantize, unpack_int4


def test_int8_keeps_each_token_and_layer_within_half_a_level_of_its_own_scale():
    values = torch.tensor([[0.5, -2.0, 1.0, 127.0], [0.0, 0.0, -3.0, 1.0]])
    codes, scales = quantize(values, groups=2)
    assert codes.dtype == torch.int8 and scales.dtype == torch.float16 and scales.shape == (2, 2)
    assert codes.tolist() == [[32, -127, 1, 127], [0, 0, -127, 42]]  # each half of a row: its largest is ±127
    tiny = torch.finfo(torch.float16).smallest_normal  # an all-zero half: any scale reads back 0
    torch.testing.assert_close(scales.float(), torch.tensor([[2 / 127, 1.0], [tiny, 3 / 127]]).half().float())
    restored = dequantize(codes, scales)
    assert ((restored - values).abs() <= scales.float().repeat_interleave(2, dim=1) / 2 + 1e-7).all()


def test_a_projection_keeps_what_lies_in_its_directions_and_orders_them_by_variance():
    generator = torch.Generator().manual_seed(0)
    basis = torch.linalg.qr(torch.randn(6, 2, generator=generator))[0].T  # two orthonormal directions in 6 dims
    codes = torch.randn(200, 2, generator=generator) * torch.tensor([5.0, 1.0])
    states = codes @ basis + 3.0
    projection = Projection.fit(states, 2)
    torch.testing.assert_close(projection.directions @ projection.directions.T, torch.eye(2), atol=1e-5, rtol=0)
    torch.testing.assert_close(projection.restore(projection.project(states)), states, atol=1e-4, rtol=0)
    assert abs(float(projection.directions[0] @ basis[0])) > 0.99  # the larger variance first
    one = Projection.fit(states, 1)
    assert (one.restore(one.project(states)) - states).norm() > 0.5 * (codes[:, 1:] @ basis[1:]).norm()
    with pytest.raises(ValueError, match="1 to 6"):
        Projection.fit(states, 7)


@pytest.mark.parametrize("name,groups,bound", [("fp16", 2, 1e-2), ("int8", 2, 0.05), ("int8-pca8", 2, 0.1),
                                              ("int4-pca8", 2, 0.5)])
def test_every_format_reads_back_full_width_states_close_to_the_stored_ones(name, groups, bound):
    states = torch.randn(40, 8, generator=torch.Generator().manual_seed(1)) * 3
    state_format = StateFormat(name)
    projection = Projection.fit(states, state_format.dims) if state_format.dims else None
    stored = state_format.pack(states, groups, projection)
    assert stored["states"].shape == (40, state_format.stored_width(8))
    assert {k: v.dtype for k, v in stored.items()} == state_format.stored_tensors()
    back = state_format.unpack(lambda key, start, end: stored[key][start:end], 5, 12, projection)
    assert back.dtype == torch.float32 and back.shape == (7, 8)
    assert (back - states[5:12]).abs().max() < bound * states.abs().max()


def test_a_smaller_projection_stores_fewer_bytes_a_token():
    states = torch.randn(30, 16)
    sizes = {name: sum(t.numel() * t.element_size() for t in StateFormat(name).pack(
        states, 1, Projection.fit(states, StateFormat(name).dims) if StateFormat(name).dims else None).values())
        for name in ("fp16", "int8", "int8-pca4", "int4-pca8")}
    assert sizes == {"fp16": 30 * 16 * 2, "int8": 30 * (16 + 2), "int8-pca4": 30 * (4 + 2), "int4-pca8": 30 * (4 + 2)}


@pytest.mark.parametrize("name", ["int4", "int8-pca0", "pca8", "int8-pca", "int2-pca8", "int4-pca"])
def test_unknown_formats_are_refused_naming_them(name):
    with pytest.raises(ValueError, match=f"states format '{name}' is not one latentqa reads"):
        StateFormat(name)
    with pytest.raises(ValueError, match="64 directions of states 32 wide"):
        StateFormat("int8-pca64").check(32)


def test_int4_packs_two_codes_a_byte_and_unpacks_them_exactly():
    codes = torch.arange(-7, 8, dtype=torch.int8).repeat(4)[:60].reshape(6, 10)
    packed = pack_int4(codes)
    assert packed.dtype == torch.uint8 and packed.shape == (6, 5)
    assert torch.equal(unpack_int4(packed), codes)
    with pytest.raises(ValueError, match="int4 stores two directions a byte, so D must be even"):
        StateFormat("int4-pca7")


def test_int4_keeps_a_quiet_direction_by_scaling_each_direction_by_its_spread():
    generator = torch.Generator().manual_seed(2)
    basis = torch.linalg.qr(torch.randn(8, 2, generator=generator))[0].T
    codes = torch.randn(500, 2, generator=generator) * torch.tensor([100.0, 1.0])  # a loud and a quiet direction
    states = codes @ basis
    projection = Projection.fit(states, 2)
    torch.testing.assert_close(projection.spread, codes.std(dim=0), rtol=0.05, atol=0)
    back = StateFormat("int4-pca2").round_trip(states, 1, projection)
    quiet = (back - states) @ basis[1]
    assert quiet.norm() < 0.2 * codes[:, 1].norm()  # int4 levels of the loud one's scale would round it to 0
    unscaled = Projection(projection.mean, projection.directions, torch.ones(2))
    assert ((StateFormat("int4-pca2").round_trip(states, 1, unscaled) - states) @ basis[1]).norm() > \
        0.9 * codes[:, 1].norm()


def test_a_projection_saved_keeps_its_spread_and_one_saved_before_int4_loads_without(tmp_path):
    states = torch.randn(50, 6)
    projection = Projection.fit(states, 4)
    projection.save(tmp_path / "p.safetensors")
    loaded = Projection.load(tmp_path / "p.safetensors")
    assert torch.equal(loaded.spread, projection.spread) and torch.equal(loaded.directions, projection.directions)
    Projection(projection.mean, projection.directions).save(tmp_path / "old.safetensors")
    assert Projection.load(tmp_path / "old.safetensors").spread is None
