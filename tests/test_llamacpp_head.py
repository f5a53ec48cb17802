"""The output head computed column by column (intentkit/backends/llamacpp/head.py), on synthetic
weights: the same logits as the whole head, in each type it computes. Against llama.cpp's own rows
it is checked in tests/test_llamacpp.py."""

from __future__ import annotations

import numpy as np
import pytest

from intentkit.backends.llamacpp.head import Head, HeadRow

WIDTH, VOCAB = 64, 50


def q8_0(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``weights`` in ggml's Q8_0 layout (per block of 32: a float16 scale, 32 int8 values), and
    the weights those bytes hold."""
    blocks = weights.reshape(len(weights), -1, 32)
    scale = (np.abs(blocks).max(axis=2) / 127).astype(np.float16)
    values = np.rint(blocks / np.maximum(scale.astype(np.float32), 1e-12)[..., None]).astype(np.int8)
    raw = np.concatenate([scale[..., None].view(np.uint8), values.view(np.uint8)], axis=2)
    return raw.reshape(len(weights), -1), (values * scale.astype(np.float32)[..., None]).reshape(weights.shape)


@pytest.fixture
def weights():
    return np.random.default_rng(0).normal(size=(VOCAB, WIDTH)).astype(np.float32)


@pytest.fixture
def hidden():
    return np.random.default_rng(1).normal(size=WIDTH).astype(np.float32) * 3


def test_q8_0_columns_are_the_whole_rows_columns(weights, hidden):
    raw, held = q8_0(weights)
    row = HeadRow(Head(raw, 8, 0.0), hidden)
    # The activation is quantized to Q8_0 as llama.cpp's kernel does: against float products the
    # difference is that rounding, well under a hundredth here.
    whole = held @ hidden
    tokens = np.array([3, 17, 42, 0])
    assert np.abs(row[tokens] - whole[tokens]).max() < 0.05 * np.abs(whole).max()
    assert np.argmax(row[np.arange(VOCAB)]) == np.argmax(whole)
    assert row[17] == pytest.approx(row[np.array([17])][0])  # a single id gives a number
    assert row[np.array([], dtype=np.int64)].shape == (0,)


@pytest.mark.parametrize(("kind", "dtype"), [(0, np.float32), (1, np.float16)])
def test_float_heads(weights, hidden, kind, dtype):
    stored = weights.astype(dtype)
    row = HeadRow(Head(stored.view(np.uint8), kind, 0.0), hidden)
    expected = stored.astype(np.float32) @ hidden.astype(dtype).astype(np.float32)
    assert np.allclose(row[np.arange(VOCAB)], expected, rtol=1e-5, atol=1e-4)


def test_soft_capping_is_applied(weights, hidden):
    row = HeadRow(Head(weights.view(np.uint8), 0, 5.0), hidden)
    expected = np.tanh(weights @ hidden / 5.0) * 5.0
    assert np.allclose(row[np.arange(VOCAB)], expected, atol=1e-5)
    assert np.abs(row[np.arange(VOCAB)]).max() <= 5.0
