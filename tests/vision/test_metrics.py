import numpy as np

from vision.metrics import classification_report, confusion_matrix, expected_calibration_error, softmax


def test_confusion_and_per_class() -> None:
    y = np.array([0, 0, 1, 1, 2, 2])
    p = np.array([0, 1, 1, 1, 2, 0])
    cm = confusion_matrix(y, p, 3)
    assert cm.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    probs = np.eye(3, dtype=np.float32)[p]
    rep = classification_report(y, probs, ["a", "b", "c"])
    assert rep["accuracy"] == 4 / 6
    assert rep["per_class"]["b"] == {"precision": 2 / 3, "recall": 1.0, "f1": 0.8, "support": 2}
    assert abs(rep["macro_f1"] - np.mean([0.5, 0.8, 2 / 3])) < 1e-12


def test_ece_zero_for_perfectly_calibrated_and_positive_for_overconfident() -> None:
    y = np.array([0, 1] * 50)
    probs = np.tile([[0.5, 0.5]], (100, 1)).astype(np.float32)
    assert expected_calibration_error(probs, y) < 1e-6
    over = np.tile([[0.99, 0.01]], (100, 1)).astype(np.float32)
    assert abs(expected_calibration_error(over, y) - 0.49) < 1e-6


def test_softmax_temperature_flattens() -> None:
    z = np.array([[2.0, 0.0]])
    assert softmax(z, 2.0)[0, 0] < softmax(z, 1.0)[0, 0]
