"""Fitting the out-of-scope detector through a backend: what is indexed, what calibrates it, and
when the intent confidence joins the distance."""

from __future__ import annotations

import numpy as np
import pytest

from intentkit import GenerateRequest, Generation
from trainers.data import records_from_rows
from trainers.scope import fit_scope

ROWS = [
    {"instruction": "我想听音乐", "output": "play_music()"},
    {"instruction": "放首歌", "output": "play_music()"},
    {"instruction": "小声一点", "output": "volume_down()"},
    {"instruction": "声音调小", "output": "volume_down()"},
    {"instruction": "今天吃什么", "output": None},
]
DEV = [
    {"instruction": "来点音乐", "output": "play_music()"},
    {"instruction": "音量小一点", "output": "volume_down()"},
    {"instruction": "随便聊聊", "output": None},
]


class HiddenBackend:
    """A backend with hidden states (a fixed vector per text) and, optionally, confidences."""

    prompt = None

    def __init__(self, confidences: dict[str, float] | None) -> None:
        self.confidences = confidences
        self.scope: object | None = "installed"
        self.scope_during_generate: list[object | None] = []

    def hidden_state(self, text: str, catalog: object = None) -> np.ndarray:
        return np.random.default_rng(sum(map(ord, text))).normal(size=8)

    def set_scope(self, detector: object | None) -> None:
        self.scope = detector

    def generate(self, request: GenerateRequest) -> Generation:
        self.scope_during_generate.append(self.scope)
        confidence = None if self.confidences is None else self.confidences[request.text]
        return Generation("play_music()", confidence=confidence)


def records(rows: list[dict[str, object]]) -> list:
    return records_from_rows((f"d.jsonl:{i + 1}", r) for i, r in enumerate(rows))


def test_calibration_rows_are_decoded_for_their_confidence() -> None:
    backend = HiddenBackend({"来点音乐": 0.9, "音量小一点": 0.6})
    seen: list[tuple[int, int]] = []
    detector = fit_scope(backend, records(ROWS), calibration=records(DEV), progress=lambda d, t: seen.append((d, t)))
    assert len(detector.intents) == 4  # the out-of-scope row is not indexed
    assert detector.uses_confidence
    assert list(detector.evidence.confidences) == [0.6, 0.9]  # the dev out-of-scope row is not used
    assert backend.scope_during_generate == [None, None] and backend.scope == "installed"  # off while decoding, then back
    assert seen[-1] == (4 + 2 + 2, 8)


@pytest.mark.parametrize(
    ("confidences", "calibration", "weight"),
    [
        (None, DEV, 0.5),  # unconstrained decoding reports no confidence
        ({"来点音乐": 0.9, "音量小一点": 0.6}, DEV, 0.0),  # weight 0: distance only, nothing decoded
        ({}, [], 0.5),  # no calibration file: leave-one-out distances
    ],
)
def test_distance_only_detectors(confidences, calibration, weight) -> None:
    backend = HiddenBackend(confidences)
    detector = fit_scope(backend, records(ROWS), calibration=records(calibration), confidence_weight=weight)
    assert not detector.uses_confidence
    assert backend.scope_during_generate == ([None] if confidences is None else [])  # stops at the first answer without one


def test_held_back_training_rows_are_indexed_and_calibrate_as_unseen() -> None:
    """The whole training file with rows held back from it as the calibration set: those rows are
    indexed once (their hidden state not computed twice) and each is measured against the others."""
    held = [{"instruction": "来点音乐", "output": "play_music()"}, {"instruction": "音量小一点", "output": "volume_down()"}]
    backend = HiddenBackend({"来点音乐": 0.9, "音量小一点": 0.6})
    seen: list[tuple[int, int]] = []
    detector = fit_scope(backend, records(ROWS + held), calibration=records(held), progress=lambda d, t: seen.append((d, t)))
    assert len(detector.intents) == 6
    assert seen[-1] == (6 + 2, 8)  # 6 indexed, 2 decoded for their confidence, no calibration state twice
    assert "2 of them also indexed" in detector.info["calibrated_on"]
    features = np.stack([backend.hidden_state(r["instruction"]) for r in held])
    distances, nearest = detector.distances(features, exclude=[[4], [5]])
    assert distances.min() > 0.01 and nearest[0] != 4 and nearest[1] != 5  # each finds another row, not itself
    apart = fit_scope(backend, records(ROWS), calibration=records(held))
    alone, _ = apart.distances(features)
    assert np.all(distances <= alone + 1e-6) and detector.threshold <= apart.threshold  # more rows to be near
