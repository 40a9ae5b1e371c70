"""The raw Philox4x32-10 generator against the Random123 known-answer vectors."""

import pytest
import torch

import pygen
from pygen.ops import reference
from tests.helpers import opcheck

# Random123 kat_vectors, "philox4x32 10": counter, key -> output (uint32 words).
KAT = [
    ([0, 0, 0, 0], [0, 0], [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]),
    ([0xFFFFFFFF] * 4, [0xFFFFFFFF] * 2, [0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD]),
    (
        [0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344],
        [0xA4093822, 0x299F31D0],
        [0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1],
    ),
]


def as_int32(words) -> torch.Tensor:
    return torch.tensor(words, dtype=torch.int64).to(torch.int32)  # wraps to the bit pattern


def as_uint32(t: torch.Tensor) -> list:
    return (t.cpu().to(torch.int64) & 0xFFFFFFFF).tolist()


@pytest.mark.parametrize("counter,key,expected", KAT)
def test_known_answers(device, counter, key, expected):
    out = pygen.ops.philox4x32_10(as_int32([counter]).to(device), as_int32([key]).to(device))
    assert as_uint32(out) == [expected]


@pytest.mark.parametrize("counter,key,expected", KAT)
def test_reference_known_answers(counter, key, expected):
    out = reference.philox4x32_10(torch.tensor([counter]), torch.tensor([key]))
    assert out.tolist() == [expected]


def test_matches_reference_on_random_words(device, torch_seed):
    counter = torch.randint(0, 1 << 32, (1000, 4), dtype=torch.int64)
    key = torch.randint(0, 1 << 32, (1000, 2), dtype=torch.int64)
    out = pygen.ops.philox4x32_10(counter.to(torch.int32).to(device), key.to(torch.int32).to(device))
    assert as_uint32(out) == reference.philox4x32_10(counter, key).tolist()


def test_batched_leading_dims(device):
    counter = as_int32([[[i, 0, 0, 0] for i in range(3)]] * 2).to(device)
    key = as_int32([[[7, 9]] * 3] * 2).to(device)
    out = pygen.ops.philox4x32_10(counter, key)
    assert out.shape == (2, 3, 4)
    assert torch.equal(out[0], out[1])


def test_opcheck(device):
    counter = as_int32([[i, 1, 2, 3] for i in range(5)]).to(device)
    key = as_int32([[1, 2]] * 5).to(device)
    opcheck(torch.ops.pygen.philox4x32_10.default, (counter, key))


@pytest.mark.parametrize(
    "counter,key,match",
    [
        (torch.zeros(2, 4, dtype=torch.int64), torch.zeros(2, 2, dtype=torch.int32), "counter must be int32"),
        (torch.zeros(2, 4, dtype=torch.int32), torch.zeros(2, 2, dtype=torch.float32), "key must be int32"),
        (
            torch.zeros(2, 3, dtype=torch.int32),
            torch.zeros(2, 2, dtype=torch.int32),
            r"counter must have shape",
        ),
        (torch.zeros(2, 4, dtype=torch.int32), torch.zeros(2, 3, dtype=torch.int32), r"key must have shape"),
        (torch.zeros(2, 4, dtype=torch.int32), torch.zeros(3, 2, dtype=torch.int32), "same leading shape"),
    ],
)
def test_bad_inputs(counter, key, match):
    with pytest.raises((TypeError, ValueError, RuntimeError), match=match):
        pygen.ops.philox4x32_10(counter, key)
