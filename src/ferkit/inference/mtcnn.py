"""MTCNN: moved to :mod:`ferkit.faces.mtcnn`; this name stays for existing imports."""

from ferkit.faces.mtcnn import *
from ferkit.faces.mtcnn import PYRAMID_STEP, THRESHOLDS, detect, load_nets, model_dir, nms  # noqa: F401
