"""Augmentation presets by name, without importing torch.

Kept apart from :mod:`ferkit.data.transforms` (which builds them) so that recipe
checks and ``ferkit recipes`` can name the presets without loading PyTorch.
"""

#: Augmentation presets by paper. Li: rotation 0-20 degrees + horizontal flip (rescaling to
#: [0, 1] is part of every model's preprocessing). Boulis: flip, +-10 degrees, +-10% zoom,
#: +-10% shifts.
PRESETS = {
    "none": {"rotation": 0, "zoom": 0, "shift": 0, "hflip": False},
    "flip": {"rotation": 0, "zoom": 0, "shift": 0, "hflip": True},
    "li": {"rotation": 20, "zoom": 0, "shift": 0, "hflip": True},
    "boulis": {"rotation": 10, "zoom": 0.1, "shift": 0.1, "hflip": True},
    # Ours: Boulis' transforms at half the zoom and shift, for small networks that the full
    # preset over-regularises (the 32-filter baseline stays below its validation accuracy
    # on the training set with it, and overfits with flips alone).
    "light": {"rotation": 10, "zoom": 0.05, "shift": 0.05, "hflip": True},
    # Khaireddin & Chen (2021), usef-kh/fer: RandomResizedCrop(48, scale 0.8-1.2 of the
    # area, ratio 3/4-4/3), RandomAffine translate 0.2 with p 0.5, flip, rotation +-10
    # with p 0.5, 40x40 crops, RandomErasing p 0.5. Area 0.8-1.2 is a side zoom of about
    # +-10%; the crop comes from the model's input config (transforms.make_augment).
    "fer-vgg": {"rotation": 10, "rotation_p": 0.5, "zoom": 0.1, "aspect": 1 / 3, "shift": 0.2,
                "shift_p": 0.5, "hflip": True, "erase": 0.5},
}
