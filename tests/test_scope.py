"""The out-of-scope detector: nearest training utterance in the model's hidden space."""

from __future__ import annotations

import numpy as np
import pytest

from intentkit.errors import ConfigError
from intentkit.scope import SCOPE_FILE, ConfidenceEvidence, ScopeDetector, ScopeFileError, resolve_scope


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
    with pytest.raises(ValueError, match="give one"):
        detector.distances(rows, exclude_self=True, exclude=[[1], [0], [1]])


def test_calibration_rows_that_are_indexed_are_measured_against_the_others():
    rng = np.random.default_rng(3)
    rows, intents = clusters(rng)
    held_out, held_intents = clusters(rng, 20)
    apart = ScopeDetector.fit(rows, intents, calibration=held_out, quantile=0.9)
    together = ScopeDetector.fit(
        np.concatenate([rows, held_out]),
        intents + held_intents,
        calibration=held_out,
        calibration_indexed=[[len(rows) + i] for i in range(len(held_out))],
        quantile=0.9,
    )
    assert len(together.intents) == 120
    distances, nearest = together.distances(held_out, exclude=[[len(rows) + i] for i in range(len(held_out))])
    assert together.threshold == pytest.approx(np.quantile(distances, 0.9)) and together.threshold > 0.001
    assert all(where != len(rows) + i for i, where in enumerate(nearest))
    assert together.threshold <= apart.threshold  # nearer neighbours among more rows, never its own entry
    assert "40 of them also indexed" in together.info["calibrated_on"]
    unexcluded = ScopeDetector.fit(np.concatenate([rows, held_out]), intents + held_intents, calibration=held_out)
    assert unexcluded.threshold == pytest.approx(0.0, abs=1e-5)  # what it guards against: each row finds itself
    with pytest.raises(ValueError, match="calibration_indexed"):
        ScopeDetector.fit(rows, intents, calibration=held_out, calibration_indexed=[[0]])
    with pytest.raises(ConfigError, match="nothing else to measure"):
        ScopeDetector.fit(rows[:2], intents[:2], calibration=rows[:1], calibration_indexed=[[0, 1]])


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


@pytest.mark.parametrize(
    ("distance", "confidence", "expected"),
    [
        (0.05, None, 0.0),  # nearer than every held-out row: p_d = 5/5
        (0.25, None, np.log(5 / 3)),  # two held-out rows at least as far
        (0.9, None, np.log(5)),  # farther than all: p_d = 1/5
        (0.05, 0.99, 0.0),  # as sure as the surest held-out row: p_c = 5/5
        (0.05, 0.5, -0.5 * np.log(1 / 5)),  # less sure than all four
        (0.25, 0.85, np.log(5 / 3) - 0.5 * np.log(3 / 5)),  # two held-out rows as unsure or less
    ],
)
def test_confidence_evidence_combines_two_ranks(distance, confidence, expected):
    evidence = ConfidenceEvidence(np.array([0.3, 0.1, 0.2, 0.4]), np.array([0.99, 0.8, 0.9, 0.85]), weight=0.5)
    assert evidence.score(distance, confidence) == pytest.approx(expected)


def test_confidence_turns_away_a_near_but_unsure_utterance(tmp_path):
    rng = np.random.default_rng(3)
    rows, intents = clusters(rng)
    held_out, _ = clusters(rng, 20)
    sure = rng.uniform(0.9, 1.0, len(held_out))
    detector = ScopeDetector.fit(
        rows, intents, calibration=held_out, calibration_confidences=sure, confidence_weight=1.0, quantile=0.9
    )
    assert detector.uses_confidence and "intent confidence, weight 1.0" in detector.info["calibrated_on"]
    distances, _ = detector.distances(held_out)
    scores = [detector.evidence.score(d, c) for d, c in zip(distances, sure, strict=True)]
    assert detector.threshold == pytest.approx(np.quantile(scores, 0.9))

    near = detector.check(rows[0] + 0.01)
    assert near.in_scope and near.score == 0.0 and near.distance < 1e-3  # nearer than every held-out row
    assert detector.with_confidence(near, 0.99).in_scope
    unsure = detector.with_confidence(near, 0.2)
    assert not unsure.in_scope and unsure.confidence == 0.2 and unsure.distance == near.distance
    assert detector.with_confidence(near, None) is near  # unconstrained decoding reports no confidence
    assert not detector.check(np.eye(8)[5]).in_scope  # far: turned away before any confidence

    loaded = ScopeDetector.load(detector.save(tmp_path / SCOPE_FILE), width=8)
    assert loaded.uses_confidence and loaded.threshold == detector.threshold
    assert loaded.with_confidence(loaded.check(rows[0]), 0.2).score == pytest.approx(unsure.score)


def test_distance_only_files_of_format_1_still_load(tmp_path):
    path = tmp_path / SCOPE_FILE
    np.savez(
        path,
        features=np.eye(3, dtype=np.float16),
        intents=np.array(["a", "b", "c"]),
        threshold=np.float64(0.2),
        info=np.array('{"format": 1, "quantile": 0.975}'),
    )
    detector = ScopeDetector.load(path, width=3)
    assert not detector.uses_confidence and detector.info == {"quantile": 0.975}
    assert detector.check(np.array([1.0, 0.1, 0.0])).in_scope


def test_bad_confidence_evidence():
    rows = np.eye(4)
    with pytest.raises(ValueError, match="one confidence per calibration row"):
        ScopeDetector.fit(rows, list("abcd"), calibration=rows[:2], calibration_confidences=[0.9])
    with pytest.raises(ValueError, match="one confidence per calibration row"):
        ScopeDetector.fit(rows, list("abcd"), calibration_confidences=[0.9])
    with pytest.raises(ValueError, match="must be finite"):
        ConfidenceEvidence(np.ones(2), np.array([0.5, np.nan]))
    with pytest.raises(ValueError, match="weight must be >= 0"):
        ConfidenceEvidence(np.ones(2), np.ones(2), weight=-1)
