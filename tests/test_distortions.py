"""Distortions: shapes and range, per-seed determinism, monotone severities, spec parsing."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

pytest.importorskip("torch", reason="needs the train extra (PyTorch)")
import torch
from conftest import face_like

from ferkit.data.distortions import (
    DISTORTIONS,
    SEVERITIES,
    DistortionAugment,
    apply_distortion,
    parse_distortion,
    sample_seed,
)
from ferkit.errors import FerkitError


@pytest.fixture(scope="module")
def faces() -> torch.Tensor:
    """8 face-like gray images (structure + texture, like real faces for blur/jpeg)."""
    imgs = np.stack([face_like(i % 7, 48, seed=i) for i in range(8)])
    return torch.from_numpy(imgs).float().div(255).unsqueeze(1)


@pytest.mark.parametrize("name", list(DISTORTIONS))
def test_shape_range_and_change(name, faces):
    for sev in SEVERITIES:
        y = parse_distortion(f"{name}:{sev}", seed=0)(faces)
        assert y.shape == faces.shape and y.dtype == faces.dtype
        assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0
        assert float((y - faces).abs().mean()) > 0.0, f"{name}:{sev} left the batch unchanged"


@pytest.mark.parametrize("name", list(DISTORTIONS))
def test_severity_is_monotonic(name, faces):
    change = [float((parse_distortion(f"{name}:{s}", seed=3)(faces) - faces).abs().mean()) for s in SEVERITIES]
    assert all(b > a for a, b in itertools.pairwise(change)), f"{name}: mean |change| by severity {change}"


@pytest.mark.parametrize("name", ["random-gray", "gaussian-noise", "salt-pepper", "occlusion",
                                  "brightness-contrast"])
def test_seeded_copy_is_identical_and_batch_size_independent(name, faces):
    a = parse_distortion(f"{name}:3", seed=7)(faces)
    # Same seed, a fresh callable, fed in uneven batches: the same copy sample by sample.
    d = parse_distortion(f"{name}:3", seed=7)
    b = torch.cat([d(faces[:3]), d(faces[3:5]), d(faces[5:])])
    assert torch.equal(a, b)
    c = parse_distortion(f"{name}:3", seed=8)(faces)
    assert not torch.equal(a, c), "a different seed must give a different copy"
    # reset() restarts the stream, so the next model sees the same copy.
    assert torch.equal(d.reset()(faces), a)


def test_sample_seed_is_stable():
    # Pinned values: changing the seeding scheme would silently change every benchmark.
    assert sample_seed(0, "random-gray", 0) == 1997662020115999858
    assert sample_seed(7, "jpeg", 123) == 7035910978925208731
    assert len({sample_seed(0, "random-gray", i) for i in range(100)}) == 100
    assert sample_seed(0, "random-gray", 5) != sample_seed(0, "gaussian-noise", 5)


def test_random_gray_replaces_the_stated_fraction():
    x = torch.full((4, 1, 48, 48), 0.5)
    for sev, frac in zip(SEVERITIES, (0.05, 0.10, 0.20, 0.30, 0.50)):
        y = parse_distortion(f"random-gray:{sev}", seed=1)(x)
        changed = float((y != 0.5).float().mean())
        assert abs(changed - frac) < 0.03, (sev, changed)


def test_rgb_batches_keep_gray_noise_gray():
    x = torch.rand(2, 3, 32, 32)
    y = parse_distortion("random-gray:5", seed=0)(x)
    hit = (y != x).any(1)
    assert hit.any()
    assert torch.equal(y[:, 0][hit], y[:, 1][hit]) and torch.equal(y[:, 1][hit], y[:, 2][hit])


@pytest.mark.parametrize("spec", ["nope:3", "random-gray:9", "random-gray:0", "random-gray:x", "random-gray",
                                  "", "jpeg:1:2"])
def test_bad_spec_is_a_clear_error(spec):
    with pytest.raises(FerkitError, match="distortion|severity"):
        parse_distortion(spec)


def test_apply_rejects_non_batches():
    with pytest.raises(FerkitError, match="batch"):
        apply_distortion(torch.rand(1, 48, 48), "jpeg", 1)


def test_augment_specs_and_share(faces):
    torch.manual_seed(0)
    aug = DistortionAugment.from_spec("random-gray:3")
    assert aug.names == ["random-gray"] and aug.severities == [3] and aug.p == 0.5
    mix = DistortionAugment.from_spec("mix:p=0.5")
    assert mix.names == list(DISTORTIONS) and mix.severities == list(SEVERITIES)
    always = DistortionAugment.from_spec("mix:p=1")
    x = faces.repeat(8, 1, 1, 1)  # 64 samples
    y = always(x)
    assert y.shape == x.shape and float(y.min()) >= 0 and float(y.max()) <= 1
    changed = (y - x).abs().flatten(1).amax(1) > 0
    assert changed.float().mean() > 0.9
    half = DistortionAugment.from_spec("gaussian-noise:p=0.5")(x)
    share = float(((half - x).abs().flatten(1).amax(1) > 0).float().mean())
    assert 0.2 < share < 0.8, share
    assert torch.equal(faces, faces.clone())  # inputs are not modified in place


@pytest.mark.parametrize("spec", ["mix:3", "mix:p=2", "foo", "random-gray:p=x", "random-gray:6"])
def test_bad_augment_spec(spec):
    with pytest.raises(FerkitError):
        DistortionAugment.from_spec(spec)
