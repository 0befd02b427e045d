"""Test-time views of a face batch: centre crop, mirror, ten crops.

Models trained on random crops of a larger face (``InputConfig.crop_from``)
see, at test time, either the centre crop or the average over ten crops: the
four corners and the centre, and the same five of the mirror image
(Krizhevsky et al. 2012; Khaireddin & Chen 2021 report 73.06% on FER2013
PublicTest with ten 40x40 crops of the 48x48 face). A model that takes the
whole face gets the whole face, or the face and its mirror for ``mirror`` and
``ten-crop`` alike (its five "crops" would all be the whole face).

The geometry is torchvision's ``five_crop`` / ``ten_crop`` (centre offset
``round((side - size) / 2)``). The functions work unchanged on numpy arrays and
torch tensors of shape (N, C, H, W), so the onnxruntime Recognizer (numpy, no
torch), the torch Recognizer and ``ferkit evaluate`` use the same code; this
module imports neither torch nor anything above ``ferkit.data`` (the mode names come from
``ferkit.models.input_config``, beside the InputConfig that records a default).
"""

from __future__ import annotations

import numpy as np

from ferkit.models.input_config import (  # noqa: F401 - re-exported
    TTA_MODES,
    center_crop,
    check_tta_mode,
    crop_offsets,
)

# The mode names live beside InputConfig (which records a file's default mode); both
# modules are free of torch.
check_mode = check_tta_mode


def _flip(x):
    return x[..., ::-1] if isinstance(x, np.ndarray) else x.flip(-1)


def _cat(parts):
    if isinstance(parts[0], np.ndarray):
        return np.ascontiguousarray(np.concatenate(parts))
    import torch  # only reached with tensors, so torch is there

    return torch.cat(parts)


def crop_views(x, size: int, mode: str | None = None):
    """All test-time views of a batch of whole faces, stacked along the batch axis.

    Args:
        x: (N, C, S, S) numpy array or torch tensor of faces at the model's frame
            side S (``InputConfig.frame``), any dtype (normalised or not).
        size: the model's input side (``InputConfig.size``), at most S.
        mode: "none" (centre crop, or the whole face), "mirror" (that and the
            centre crop of the mirror image), "ten-crop" (five crops of the face and
            five of its mirror image; the face and its mirror when ``size == S``).

    Returns:
        (V * N, C, size, size), view-major: rows ``v * N .. (v + 1) * N`` are view
        ``v`` of every face. Average with :func:`mean_over_views`.

    Raises:
        ValueError: unknown mode, or ``size`` larger than S.
    """
    mode = check_mode(mode)
    side = x.shape[-1]
    if size > side:
        raise ValueError(f"crop size {size} is larger than the image side {side}")
    if mode == "none":
        return center_crop(x, size)
    # The mirrored views are crops of the mirror image (torchvision's order and geometry;
    # with an odd margin its centre crop is not the mirror of the centre crop).
    m = _flip(x)
    if mode == "ten-crop" and size < side:
        offsets = crop_offsets(side, size)
        return _cat([im[..., t : t + size, left : left + size] for im in (x, m) for t, left in offsets])
    return _cat([center_crop(x, size), center_crop(m, size)])


def num_views(mode: str | None, size: int, side: int) -> int:
    """How many views :func:`crop_views` makes per face."""
    mode = check_mode(mode)
    return 1 if mode == "none" else 10 if (mode == "ten-crop" and size < side) else 2


def mean_over_views(probs, n: int):
    """(V * N, K) view-major probabilities -> (N, K) mean over the V views."""
    v = probs.shape[0] // n if n else 1
    return probs.reshape(v, n, *probs.shape[1:]).mean(0)
