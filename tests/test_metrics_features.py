"""The local digits classifier: accuracy, atomic on-disk cache, reload, features."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from gentool.core.data import digits_split
from gentool.core.errors import BadInput
from gentool.core.metrics import digits_classifier, digits_features, frechet_distance
from gentool.core.metrics import features as feat


def test_digits_classifier_trains_caches_and_reloads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GENTOOL_CACHE", str(tmp_path))
    model = digits_classifier()
    assert feat.classifier_accuracy(model, "test") > 0.9
    path = tmp_path / "digits_classifier.pt"
    assert path.is_file() and not list(tmp_path.glob(".*tmp"))
    assert torch.load(path, weights_only=True)["test_accuracy"] > 0.9

    x, _ = digits_split("test")
    f1 = digits_features(x[:50].float())
    assert f1.shape == (50, 64) and f1.dtype == torch.float32 and bool((f1 >= 0).all())

    feat._cached_classifier.cache_clear()
    monkeypatch.setattr(feat, "train_digits_classifier", lambda *a: pytest.fail("should reload from cache"))
    assert torch.equal(digits_features(x[:50].float()), f1)

    real, _ = digits_split("train")
    same = frechet_distance(digits_features(real[:300]), digits_features(x[:300]))
    noise_images = torch.rand(300, 64, dtype=torch.float64) * 2 - 1
    noise = frechet_distance(digits_features(real[:300]), digits_features(noise_images))
    assert same < 0.2 * noise
    with pytest.raises(BadInput, match=r"\(3, 63\)"):
        digits_features(torch.zeros(3, 63))


def test_corrupt_cache_is_retrained(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GENTOOL_CACHE", str(tmp_path))
    (tmp_path / "digits_classifier.pt").write_bytes(b"not a checkpoint")
    assert feat._load(tmp_path / "digits_classifier.pt") is None
