"""Image distortions for noise-robust training and robustness benchmarks.

Every distortion maps a float batch in [0, 1] of shape (B, C, H, W) to a batch
of the same shape, at one of five severities (1 = mild ... 5 = severe):

==================  ================================================================
random-gray         Li's corruption: a fraction of pixels replaced by uniform random
                    gray levels (a faulty sensor / transmission)
gaussian-noise      additive N(0, sigma^2) noise
salt-pepper         a fraction of pixels set to black or white
gaussian-blur       Gaussian blur, sigma in pixels of a 48x48 face (scaled with size)
brightness-contrast contrast reduced around the image mean plus a brightness shift
occlusion           a square block erased to black (data loss)
jpeg                JPEG re-encoding at a low quality (OpenCV, per image)
==================  ================================================================

Determinism. :func:`parse_distortion` returns a callable that keeps a running
sample counter: the ``i``-th sample it ever sees draws its randomness from a
generator seeded with ``(seed, distortion name, i)``. Evaluating a test set in
its fixed order therefore gives the identical distorted copy for every model
and every run, whatever the batch size. The same random field is reused across
severities (only the threshold / amplitude changes), so a higher severity
corrupts a superset of what a lower one does and the damage grows
monotonically.

Training. :class:`DistortionAugment` applies distortions to a random share of
each training batch using the global torch RNG (fast, on the batch's device).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from torch import nn

from ferkit.errors import FerkitError

SEVERITIES = (1, 2, 3, 4, 5)


class _Rng:
    """Random draws of per-sample shape for a batch of ``b`` samples.

    With ``seeds`` each sample has its own CPU generator (reproducible per
    sample position); without, draws come from the global RNG on ``device``.
    Distortions must draw in a fixed order so per-sample streams line up.
    """

    def __init__(self, b: int, device, seeds: list[int] | None = None):
        self.b, self.device = b, device
        self.gens = None
        if seeds is not None:
            self.gens = [torch.Generator().manual_seed(s) for s in seeds]

    def _draw(self, fn, shape) -> torch.Tensor:
        if self.gens is None:
            return fn((self.b, *shape), device=self.device)
        return torch.stack([fn(tuple(shape), generator=g) for g in self.gens]).to(self.device)

    def rand(self, *shape) -> torch.Tensor:
        return self._draw(torch.rand, shape)

    def randn(self, *shape) -> torch.Tensor:
        return self._draw(torch.randn, shape)


def _expand(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return v.view(-1, *([1] * (x.dim() - 1))).to(x.dtype)


def random_gray(x, sev, rng):
    """Li's corruption: 5/10/20/30/50% of pixels replaced by a uniform random gray level (all channels alike)."""
    frac = (0.05, 0.10, 0.20, 0.30, 0.50)[sev - 1]
    _b, _, h, w = x.shape
    u = rng.rand(1, h, w)  # which pixels: the same field at every severity
    gray = rng.rand(1, h, w).to(x.dtype)  # one gray level for all channels of a pixel
    return torch.where(u < frac, gray, x)


def gaussian_noise(x, sev, rng):
    """Additive N(0, sigma^2) noise, sigma 0.04/0.08/0.12/0.18/0.26 (pixel range [0, 1]), clamped."""
    sigma = (0.04, 0.08, 0.12, 0.18, 0.26)[sev - 1]
    return (x + sigma * rng.randn(*x.shape[1:]).to(x.dtype)).clamp(0, 1)


def salt_pepper(x, sev, rng):
    """2/5/10/20/30% of pixels set to black or white (equal odds)."""
    frac = (0.02, 0.05, 0.10, 0.20, 0.30)[sev - 1]
    _, _, h, w = x.shape
    u = rng.rand(1, h, w)
    salt = (rng.rand(1, h, w) < 0.5).to(x.dtype)
    return torch.where(u < frac, salt, x)


def gaussian_blur(x, sev, rng):
    """Gaussian blur, sigma 0.6/1.0/1.5/2.0/3.0 px on a 48-px face (scaled with the side)."""
    sigma = (0.6, 1.0, 1.5, 2.0, 3.0)[sev - 1] * x.shape[-1] / 48.0
    k = 2 * int(3 * sigma + 0.5) + 1
    return TF.gaussian_blur(x, kernel_size=[k, k], sigma=[sigma, sigma])


def brightness_contrast(x, sev, rng):
    """Contrast x0.8/0.65/0.5/0.35/0.2 around the image mean, then a brightness shift of
    +-0.1..0.5 (darker or brighter per sample), clamped to [0, 1].
    """
    contrast = (0.8, 0.65, 0.5, 0.35, 0.2)[sev - 1]
    shift = (0.1, 0.2, 0.3, 0.4, 0.5)[sev - 1]
    sign = torch.where(rng.rand() < 0.5, -1.0, 1.0)  # darker or brighter, per sample
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return ((x - mean) * contrast + mean + _expand(sign * shift, x)).clamp(0, 1)


def occlusion(x, sev, rng):
    # A block centred at a random point, clipped to the image: with the same centre a
    # larger severity erases a superset of the pixels.
    """A black square of 15/25/35/45/55% of the side, centred at a random point, clipped to the image."""
    side = (0.15, 0.25, 0.35, 0.45, 0.55)[sev - 1]
    _, _, h, w = x.shape
    c = rng.rand(2)
    cy, cx = c[:, 0] * h, c[:, 1] * w
    half_h, half_w = side * h / 2, side * w / 2
    ys = torch.arange(h, device=x.device).view(1, h, 1) + 0.5
    xs = torch.arange(w, device=x.device).view(1, 1, w) + 0.5
    inside = ((ys - cy.view(-1, 1, 1)).abs() <= half_h) & ((xs - cx.view(-1, 1, 1)).abs() <= half_w)
    return x.masked_fill(inside.unsqueeze(1), 0.0)


def jpeg(x, sev, rng):
    """JPEG re-encoding at quality 25/18/12/8/5 (OpenCV, per image, on the CPU); same shape and device back."""
    quality = (25, 18, 12, 8, 5)[sev - 1]
    arr = (x.detach().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    out = np.empty_like(arr)
    for i, img in enumerate(arr):
        ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(img), [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:  # cannot happen for uint8 images; keep the sample rather than fail a batch
            out[i] = img
            continue
        dec = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
        out[i] = dec.reshape(img.shape)
    return torch.from_numpy(out).permute(0, 3, 1, 2).to(x.device, x.dtype) / 255.0


@dataclass(frozen=True)
class Distortion:
    """A named distortion: ``fn(x01 (B, C, H, W), severity 1..5, rng) -> x01`` of the same shape."""

    name: str
    fn: Callable  # (x01 (B,C,H,W), severity 1..5, _Rng) -> x01
    description: str


#: All distortions, by name (the order used in robustness tables).
DISTORTIONS: dict[str, Distortion] = {
    d.name: d
    for d in (
        Distortion("random-gray", random_gray, "fraction of pixels -> random gray (5/10/20/30/50%)"),
        Distortion("gaussian-noise", gaussian_noise, "additive Gaussian noise, sigma 0.04..0.26"),
        Distortion("salt-pepper", salt_pepper, "fraction of pixels -> black/white (2..30%)"),
        Distortion("gaussian-blur", gaussian_blur, "Gaussian blur, sigma 0.6..3 px at 48x48"),
        Distortion("brightness-contrast", brightness_contrast, "contrast x0.8..0.2 and brightness +-0.1..0.5"),
        Distortion("occlusion", occlusion, "black square, 15..55% of the side, random centre"),
        Distortion("jpeg", jpeg, "JPEG quality 25/18/12/8/5"),
    )
}


def _check(name: str, sev: int) -> None:
    if name not in DISTORTIONS:
        raise FerkitError(f"unknown distortion {name!r}; choose from {', '.join(DISTORTIONS)}")
    if sev not in SEVERITIES:
        raise FerkitError(f"distortion {name}: severity must be 1..5, got {sev}")


def apply_distortion(x: torch.Tensor, name: str, severity: int, seeds: list[int] | None = None) -> torch.Tensor:
    """Distort a [0, 1] float batch; ``seeds`` (one per sample) make it reproducible."""
    _check(name, severity)
    if x.dim() != 4:
        raise FerkitError(f"distortions expect a (B, C, H, W) batch, got shape {tuple(x.shape)}")
    if len(x) == 0:
        return x
    return DISTORTIONS[name].fn(x, severity, _Rng(len(x), x.device, seeds))


def sample_seed(seed: int, name: str, position: int) -> int:
    """The generator seed of sample ``position`` for distortion ``name`` (documented, stable)."""
    ss = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, zlib.crc32(name.encode()), int(position)])
    return int(ss.generate_state(1, np.uint64)[0] & 0x7FFF_FFFF_FFFF_FFFF)


class SeededDistortion:
    """A reproducible distortion: sample ``i`` of the stream is always distorted the same way.

    Call it on consecutive batches; :meth:`reset` restarts the sample counter
    (e.g. before evaluating the next model on the same test set).
    """

    def __init__(self, name: str, severity: int, seed: int = 0):
        _check(name, severity)
        self.name, self.severity, self.seed = name, severity, seed
        self.position = 0

    def reset(self) -> SeededDistortion:
        """Restart the sample counter, so the next batch gets the copy the first batch got; returns self."""
        self.position = 0
        return self

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        seeds = [sample_seed(self.seed, self.name, self.position + i) for i in range(len(x))]
        self.position += len(x)
        return apply_distortion(x, self.name, self.severity, seeds)

    def __repr__(self) -> str:
        return f"SeededDistortion({self.name}:{self.severity}, seed={self.seed})"


def _split_spec(spec: str) -> tuple[str, list[str]]:
    if not isinstance(spec, str) or not spec.strip():
        raise FerkitError("empty distortion spec; expected NAME:SEVERITY, e.g. random-gray:3")
    name, *opts = [p.strip() for p in spec.strip().split(":")]
    return name.lower(), opts


def parse_distortion(spec: str, seed: int = 0) -> SeededDistortion:
    """``"random-gray:3"`` -> a seeded callable mapping [0,1] batches to distorted ones.

    Args:
        spec: ``NAME:SEVERITY`` with NAME in :data:`DISTORTIONS` and SEVERITY 1..5.
        seed: selects the distorted copy; the same seed gives the same copy.

    Raises:
        FerkitError: unknown name or a severity outside 1..5, with the choices.
    """
    name, opts = _split_spec(spec)
    if len(opts) != 1:
        raise FerkitError(f"distortion spec {spec!r}: expected NAME:SEVERITY, e.g. random-gray:3")
    try:
        sev = int(opts[0])
    except ValueError:
        raise FerkitError(f"distortion spec {spec!r}: severity must be an integer 1..5") from None
    return SeededDistortion(name, sev, seed)


class DistortionAugment(nn.Module):
    """Training-time distortion of a random share of each [0, 1] batch.

    Args:
        names: distortions to draw from (one, or all for "mix").
        severities: severities to draw from, uniformly per sample.
        p: probability that a sample is distorted (the rest stay clean, so the
            model keeps its clean accuracy).
    """

    def __init__(self, names: list[str], severities=SEVERITIES, p: float = 0.5):
        super().__init__()
        for n in names:
            _check(n, 1)
        for s in severities:
            _check(names[0], int(s))
        if not 0.0 < p <= 1.0:
            raise FerkitError(f"distortion augment: p must be in (0, 1], got {p}")
        self.names, self.severities, self.p = list(names), [int(s) for s in severities], float(p)

    @classmethod
    def from_spec(cls, spec: str) -> DistortionAugment:
        """Parse ``NAME[:SEVERITY][:p=P]`` or ``mix[:p=P]`` (e.g. ``random-gray:3``, ``mix:p=0.5``).

        Without a severity each distorted sample gets a random severity 1..5.
        """
        name, opts = _split_spec(spec)
        names = list(DISTORTIONS) if name == "mix" else [name]
        sevs, p = list(SEVERITIES), 0.5
        for o in opts:
            if o.startswith("p="):
                try:
                    p = float(o[2:])
                except ValueError:
                    raise FerkitError(f"distortion augment {spec!r}: p must be a number") from None
            elif o.isdigit() and name != "mix":
                sevs = [int(o)]
            else:
                raise FerkitError(
                    f"distortion augment {spec!r}: expected NAME[:SEVERITY][:p=P] or mix[:p=P], e.g. mix:p=0.5"
                )
        return cls(names, sevs, p)

    def extra_repr(self) -> str:
        """The names, severities and probability, shown by ``print(module)``."""
        return f"names={self.names}, severities={self.severities}, p={self.p}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Distort a random share ``p`` of a [0, 1] batch (B, C, H, W); each picked sample gets
        one distortion and severity drawn from the global torch RNG. Same shape back.
        """
        b = len(x)
        if b == 0:
            return x
        pick = torch.rand(b) < self.p
        which = torch.randint(len(self.names), (b,))
        sev = torch.tensor(self.severities)[torch.randint(len(self.severities), (b,))]
        out = x.clone()
        # Group the chosen samples by (distortion, severity): a handful of batched calls.
        for key in {(int(w), int(s)) for w, s, k in zip(which, sev, pick) if k}:
            m = pick & (which == key[0]) & (sev == key[1])
            idx = m.nonzero().squeeze(1).to(x.device)
            out[idx] = apply_distortion(x[idx], self.names[key[0]], key[1])
        return out


def distortion_grid(severities=SEVERITIES, names=None) -> list[tuple[str, int]]:
    """Every (name, severity) pair, in table order."""
    return [(n, s) for n in (names or list(DISTORTIONS)) for s in severities]
