"""StyleNAT progressive dilations for more than two partitions: `model.dilation_spacing`
geometric (default) and powers_of_two, against lists written out by hand from each rule."""

from __future__ import annotations

import functools
from typing import Any

import pytest

from sparsegen.config import load_params, resolve
from sparsegen.models.stylenat import architecture as arch
from sparsegen.models.stylenat.generator import build_generator

SIDES = (8, 16, 32, 64, 128, 256)  # k = 7: d_max 1, 2, 4, 8, 16, 32 (Table 5)

# powers_of_two: partition i of p gets 2^round_half_up(i * log2(d_max) / (p - 1)).
POWERS_OF_TWO = {
    2: {8: [1, 1], 16: [1, 2], 32: [1, 4], 64: [1, 8], 128: [1, 16], 256: [1, 32]},
    3: {8: [1, 1, 1], 16: [1, 2, 2], 32: [1, 2, 4], 64: [1, 4, 8], 128: [1, 4, 16],
        256: [1, 8, 32]},  # exponents 0.5, 1.5, 2.5 round up
    4: {8: [1] * 4, 16: [1, 1, 2, 2], 32: [1, 2, 2, 4], 64: [1, 2, 4, 8], 128: [1, 2, 8, 16],
        256: [1, 4, 8, 32]},
    6: {8: [1] * 6, 16: [1, 1, 1, 2, 2, 2], 32: [1, 1, 2, 2, 4, 4], 64: [1, 2, 2, 4, 4, 8],
        128: [1, 2, 4, 4, 8, 16], 256: [1, 2, 4, 8, 16, 32]},
    8: {8: [1] * 8, 16: [1, 1, 1, 1, 2, 2, 2, 2], 32: [1, 1, 2, 2, 2, 2, 4, 4],
        64: [1, 1, 2, 2, 4, 4, 8, 8], 128: [1, 2, 2, 4, 4, 8, 8, 16],
        256: [1, 2, 2, 4, 8, 16, 16, 32]},
}
# geometric: round_half_up(d_max^(i / (p - 1))).
GEOMETRIC = {
    2: {8: [1, 1], 16: [1, 2], 32: [1, 4], 64: [1, 8], 128: [1, 16], 256: [1, 32]},
    4: {8: [1] * 4, 16: [1, 1, 2, 2], 32: [1, 2, 3, 4], 64: [1, 2, 4, 8], 128: [1, 3, 6, 16],
        256: [1, 3, 10, 32]},
    6: {8: [1] * 6, 16: [1, 1, 1, 2, 2, 2], 32: [1, 1, 2, 2, 3, 4], 64: [1, 2, 2, 3, 5, 8],
        128: [1, 2, 3, 5, 9, 16], 256: [1, 2, 4, 8, 16, 32]},
    8: {8: [1] * 8, 16: [1, 1, 1, 1, 1, 2, 2, 2], 32: [1, 1, 1, 2, 2, 3, 3, 4],
        64: [1, 1, 2, 2, 3, 4, 6, 8], 128: [1, 1, 2, 3, 5, 7, 11, 16],
        256: [1, 2, 3, 4, 7, 12, 20, 32]},
}


@functools.cache
def _params(preset: str) -> dict[str, Any]:
    return load_params(overrides={"preset": preset})


def _model(variant: str = "stylenat", preset: str = "paper", **over: Any) -> dict[str, Any]:
    return {**resolve(_params(preset), "stylenat", variant, check=False)["model"], **over}


def _layout(spacing: str, partitions: int) -> dict[int, list[int]]:
    m = _model(dilations="progressive", partitions=partitions, dilation_spacing=spacing)
    return {side: arch.dilations(m, side) for side in SIDES}


@pytest.mark.parametrize("partitions", sorted(POWERS_OF_TWO))
def test_powers_of_two(partitions):
    assert _layout("powers_of_two", partitions) == POWERS_OF_TWO[partitions]


@pytest.mark.parametrize("partitions", sorted(GEOMETRIC))
def test_geometric(partitions):
    assert _layout("geometric", partitions) == GEOMETRIC[partitions]


def test_defaults_and_the_paper_tables():
    m = _model()
    assert m["dilation_spacing"] == "geometric"  # the paper leaves the middle partitions open
    assert arch.dilations(_model("prog_di4"), 256) == [1, 3, 10, 32]
    for spacing in arch.DILATION_SPACINGS:  # Table 5: two partitions give [1, d_max]
        m2 = _model("ffhq1024", dilation_spacing=spacing)
        assert {r: arch.dilations(m2, r) for r in arch.levels(m2) if r > 4} == {
            8 * 2 ** i: [1, 2 ** i] for i in range(8)}
    # Table 6 (pyramid) at 256²: six partitions reach the same row under either spacing
    assert _layout("powers_of_two", 6)[256] == _layout("geometric", 6)[256] == [
        1, 2, 4, 8, 16, 32] == arch.dilations(_model(dilations="pyramid"), 256)


@pytest.mark.parametrize("partitions", [3, 4, 5, 6, 7, 8, 12])
def test_powers_of_two_properties(partitions):
    m = _model(partitions=partitions, dilation_spacing="powers_of_two")
    for side in (*SIDES, 512, 1024):
        d, d_max = arch.dilations(m, side), arch.max_dilation(7, side)
        assert len(d) == partitions and d[0] == 1 and d[-1] == d_max
        assert d == sorted(d) and all(x & (x - 1) == 0 for x in d)  # powers of 2, in order
        powers = d_max.bit_length()  # 1, 2, ..., d_max
        if partitions <= powers:  # distinct while there are enough powers of 2 ...
            assert len(set(d)) == partitions
        else:  # ... otherwise every power of 2 is used (none skipped), duplicates kept
            assert sorted(set(d)) == [2 ** i for i in range(powers)]


def test_spacing_reaches_the_generator_and_problems():
    m = {**_model("church_p8", "smoke", partitions=4, dilation_spacing="powers_of_two"),
         "backend": "torch"}
    side = m["resolution"]  # 16: d_max 2
    assert arch.problems(m) == []
    attn = build_generator(m).attention_layers()[f"{side}.0"]
    assert attn.dilations == [1, 1, 2, 2]
    (msg,) = arch.problems({**m, "dilation_spacing": "linear"})
    assert "model.dilation_spacing 'linear'" in msg
    assert arch.problems({**m, "dilation_spacing": "linear", "partitions": 2}) == []  # unused
    with pytest.raises(ValueError, match="dilation_spacing"):
        arch.progressive_dilations(32, 4, "linear")
