"""The out-of-scope detector: nearest training utterance in the model's hidden space."""

from __future__ import annotations

import numpy as np
import pytest

from intentkit.scope import SCOPE_FILE, ScopeDetector, ScopeFileError, resolve_scope


def clusters(rng: np.random.Generator, n: int = 40) -> tuple[np.ndarray, list[str]]:
    """Two tight clusters of unit-ish vectors, one per intent."""
    centres = np.eye(8)[:2] * 10
    rows = np.concatenate([centres[i] + rng.normal(0, 0.5, (n, 8)) for i in range(2)])
    return rows, ["play_music"] * n + ["volume_down"] * n


def test_threshold_is_the_quantile_of_held_out_distances():
    rng = np.random.default_rng(0)
    rows, intents = clusters(rng)
    held_out, _ = clusters(rng, 20)
    detector = ScopeDetector.fit(rows, intents, calibration=held_out, quantile=0.9)
    distances, _ = detector.distances(held_out)
    assert detector.threshold == pytest.approx(np.quantile(distances, 0.9))
    assert np.mean(distances <= detector.threshold) == pytest.approx(0.9, abs=0.03)
    assert "40 held-out" in detector.info["calibrated_on"]


def test_near_and_far_utterances():
    rng = np.random.default_rng(1)
    rows, intents = clusters(rng)
    detector = ScopeDetector.fit(rows, intents)  # leave-one-out: no calibration set
    assert "leave-one-out" in detector.info["calibrated_on"]
    near = detector.check(np.eye(8)[1] * 10 + rng.normal(0, 0.1, 8))
    assert near.in_scope and near.nearest_intent == "volume_down"
    far = detector.check(np.eye(8)[5])
    assert not far.in_scope and far.distance > 0.8


def test_leave_one_out_does_not_match_a_row_with_itself():
    rows = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.1]])
    detector = ScopeDetector(rows, ["a", "b", "a"], threshold=0.5)
    distances, nearest = detector.distances(rows, exclude_self=True)
    assert list(nearest) == [2, 2, 0]
    assert distances[0] > 0


def test_save_and_load_round_trip(tmp_path):
    rng = np.random.default_rng(2)
    rows, intents = clusters(rng)
    detector = ScopeDetector.fit(rows, intents, info={"model": "m.gguf"})
    loaded = ScopeDetector.load(detector.save(tmp_path / SCOPE_FILE), width=8)
    assert loaded.threshold == detector.threshold and loaded.intents == intents
    assert loaded.info["model"] == "m.gguf"
    probe = rows[3] + 0.01
    assert loaded.check(probe).distance == pytest.approx(detector.check(probe).distance, abs=1e-3)  # stored as float16


def test_bad_files_name_the_file(tmp_path):
    junk = tmp_path / "scope.npz"
    junk.write_text("not numpy")
    with pytest.raises(ScopeFileError, match=r"scope\.npz: not an intentkit scope file"):
        ScopeDetector.load(junk)
    detector = ScopeDetector(np.ones((2, 4)), ["a", "b"], threshold=0.1)
    path = detector.save(tmp_path / "four.npz")
    with pytest.raises(ScopeFileError, match="4-wide features, the model's are 640 wide"):
        ScopeDetector.load(path, width=640)
    with pytest.raises(ValueError, match="2 feature rows but 1 intents"):
        ScopeDetector(np.ones((2, 4)), ["a"], threshold=0.1)
    with pytest.raises(ValueError, match="fitted on 4"):
        detector.check(np.ones(3))


def test_resolve_scope(tmp_path):
    assert resolve_scope("auto", tmp_path, 4) is None  # nothing next to the model: no detector
    ScopeDetector(np.ones((2, 4)), ["a", "b"], threshold=0.1).save(tmp_path / SCOPE_FILE)
    assert resolve_scope("auto", tmp_path, 4).threshold == pytest.approx(0.1)
    assert resolve_scope(None, tmp_path, 4) is None
    with pytest.raises(ScopeFileError):
        resolve_scope("auto", tmp_path, 8)
    with pytest.raises(FileNotFoundError):
        resolve_scope(tmp_path / "missing.npz", None, 4)
