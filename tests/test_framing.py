"""Face framing lives below every layer: one cropper, each loader's margin explicit.

The KDEF/JAFFE/RAVDESS loaders and the Recognizer cut faces with the same function
(:func:`ferkit.faces.face_square`), so one box and one margin give one crop whichever
path asks for it.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from ferkit import faces
from ferkit.errors import DataError
from ferkit.faces import PORTRAIT_MARGIN, VIDEO_MARGIN, crop_face, face_square, square_around
from ferkit.models.input_config import InputConfig

BOX = (14, 9, 30, 36)  # a non-square box, so the square's side comes from the longer side


def _photo(h=90, w=70, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_the_old_name_is_the_same_api():
    import ferkit.inference.faces as old
    import ferkit.inference.mtcnn as old_mtcnn
    from ferkit.faces import mtcnn

    assert old.get_detector is faces.get_detector and old.crop_face is faces.crop_face
    assert old._DETECTORS is faces.registry._DETECTORS and old_mtcnn.detect is mtcnn.detect
    assert set(faces.__all__) <= set(dir(old))


def test_square_around_centres_on_the_box_and_rounds():
    # box centre (29, 27), longer side 36; margin 0.1 -> side 43.2 -> 43 pixels
    assert square_around(BOX, 0.1) == (round(29 - 21.6), round(27 - 21.6), 43)
    assert square_around(BOX, 0.0) == (11, 9, 36)


def test_face_square_replicates_the_edge_outside_the_image():
    img = _photo()
    sq = face_square(img, (0, 0, 20, 20), 0.5)  # reaches 10 px above and left of the image
    assert sq.shape == (40, 40, 3)
    assert (sq[:10, 10] == img[0, 0]).all() and (sq[10:, 10:] == img[:30, :30]).all()


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan"), "wide"])
def test_bad_margins_are_refused(bad):
    with pytest.raises(ValueError, match="face margin"):
        faces.check_margin(bad)


def test_kdef_loader_and_recognizer_crop_cut_the_same_face(tmp_path, monkeypatch):
    """The KDEF face_crop item, decoded for a 48x48 gray model, equals the Recognizer's
    crop_face of the same photo, box and margin (both call face_square)."""
    pytest.importorskip("torch", reason="FerDataset needs the train extra")
    from ferkit.data.dataset import FerDataset, load_index

    img = _photo()
    d = tmp_path / "KDEF" / "AF01"
    d.mkdir(parents=True)
    Image.fromarray(img).save(d / "AF01HAS.png")  # lossless, so the decoded pixels are img
    (d / "AF01HAS.png").rename(d / "AF01HAS.JPG")  # KDEF names; PIL reads by content
    monkeypatch.setattr(faces, "detect_faces", lambda image: [BOX])
    cfg = InputConfig(size=48, channels=1)
    for margin, opts in ((PORTRAIT_MARGIN, {}), (0.3, {"face_margin": 0.3})):
        idx = load_index(tmp_path, "all", "kdef", face_crop=True, **opts)
        assert np.array_equal(idx.loader(idx.items[0]), face_square(img, BOX, margin))
        ds = FerDataset(idx, cfg.frame, cfg.channels, ["happy"], use_cache=False, progress=False)
        assert np.array_equal(ds.images[0], crop_face(img, BOX, cfg, margin=margin))


def test_loader_margins_are_source_options_and_change_the_cache_key(tmp_path, monkeypatch):
    from ferkit.data.kdef import index_kdef

    d = tmp_path / "KDEF" / "AF01"
    d.mkdir(parents=True)
    Image.fromarray(_photo()).save(d / "AF01HAS.JPG")
    monkeypatch.setattr(faces, "detect_faces", lambda image: [BOX])
    plain = index_kdef(tmp_path, "all", face_crop=True)
    assert plain.loader.margin == PORTRAIT_MARGIN
    # the default margin keeps the key caches were written under before the option existed
    assert index_kdef(tmp_path, "all", face_crop=True, face_margin=0.1).fingerprint == plain.fingerprint
    assert index_kdef(tmp_path, "all", face_crop=True, face_margin=0.2).fingerprint != plain.fingerprint
    with pytest.raises(DataError, match="face margin"):
        index_kdef(tmp_path, "all", face_crop=True, face_margin=2)


def test_ravdess_frames_use_the_one_cropper(monkeypatch):
    from ferkit.data.ravdess import FrameReader

    monkeypatch.setattr(faces, "detect_faces", lambda image: [BOX])
    frame = _photo()
    reader = FrameReader(face_crop=True)
    assert reader.margin == VIDEO_MARGIN
    assert np.array_equal(reader._crop(frame, "v.mp4", 0), face_square(frame, BOX, VIDEO_MARGIN))
    # a box at the frame's edge gives a square (edge replicated), not a clipped rectangle
    monkeypatch.setattr(faces, "detect_faces", lambda image: [(50, 60, 20, 30)])
    assert FrameReader(face_crop=True)._crop(frame, "v.mp4", 0).shape == (33, 33, 3)


# ------------------------------------------------------------- framing in the model's input config
def test_input_config_face_margin_round_trips_and_defaults_to_the_fer_framing():
    cfg = InputConfig(size=48, channels=1, face_margin=0.1)
    assert InputConfig.from_dict(cfg.to_dict()) == cfg
    # files written before framing was recorded: the FER2013 framing the shipped model uses
    assert InputConfig.from_dict({"size": 48, "channels": 1}).face_margin == faces.FER_MARGIN == 0.0
    with pytest.raises(ValueError, match="face margin"):
        InputConfig(size=48, channels=1, face_margin=-0.2)


@pytest.fixture(scope="module")
def framed_files(tmp_path_factory):
    """A boulis-baseline declaring face_margin 0.1, saved slim and exported to ONNX."""
    pytest.importorskip("torch", reason="saving and exporting need the train extra")
    pytest.importorskip("onnx", reason="exporting needs the train extra")
    import dataclasses

    from ferkit.inference.export import export_model
    from ferkit.labels import FER7
    from ferkit.models import create_model
    from ferkit.models.checkpoint import save_slim

    d = tmp_path_factory.mktemp("framed")
    model = create_model("boulis-baseline").eval()
    model.input_config = dataclasses.replace(model.input_config, face_margin=0.1)
    save_slim(model, {"model": "boulis-baseline", "labels": list(FER7), "model_kwargs": {}}, d / "m.pt")
    onnx = export_model(d / "m.pt", "onnx", d / "m.onnx")["path"]
    return d / "m.pt", onnx


def test_framing_survives_save_load_and_onnx_metadata(framed_files):
    from ferkit.inference.export import onnx_session
    from ferkit.inference.recognizer import Recognizer
    from ferkit.models.checkpoint import load_checkpoint

    slim, onnx = framed_files
    model, spec = load_checkpoint(slim)
    assert spec["input_config"].face_margin == model.input_config.face_margin == 0.1
    assert onnx_session(onnx)[1]["input_config"]["face_margin"] == 0.1
    assert Recognizer.from_pretrained(slim).margin == 0.1
    assert Recognizer.from_pretrained(onnx, backend="onnx").margin == 0.1
    # the shipped model keeps today's framing: the detector box itself
    assert Recognizer.from_pretrained("default", backend="onnx").margin == 0.0


def test_recognizer_and_kdef_loader_cut_the_same_face(framed_files, tmp_path, monkeypatch):
    """Same photo, box and margin: the Recognizer classifies exactly the face the KDEF
    loader (face_crop, face_margin 0.1) decodes for the same model."""
    from ferkit.data.dataset import FerDataset, load_index
    from ferkit.inference.recognizer import Recognizer

    img = _photo(seed=4)
    d = tmp_path / "KDEF" / "AF01"
    d.mkdir(parents=True)
    Image.fromarray(img).save(d / "AF01SAS.png")
    (d / "AF01SAS.png").rename(d / "AF01SAS.JPG")
    monkeypatch.setattr(faces, "detect_faces", lambda image: [BOX])
    rec = Recognizer.from_pretrained(framed_files[1], backend="onnx", detector="none")
    seen = []
    monkeypatch.setattr(rec, "classify_faces", lambda crops: seen.extend(crops) or np.full((len(crops), 7), 1 / 7))
    rec.predict_arrays([img], boxes=[[BOX]])
    cfg = rec.input_config
    idx = load_index(tmp_path, "all", "kdef", face_crop=True, face_margin=cfg.face_margin)
    ds = FerDataset(idx, cfg.frame, cfg.channels, ["sad"], use_cache=False, progress=False)
    assert np.array_equal(seen[0], ds.images[0])
    assert not np.array_equal(seen[0], crop_face(img, BOX, cfg, margin=0.0))  # the margin mattered


def test_training_on_cut_faces_records_their_margin(tmp_path):
    """A run on KDEF faces cut with face_margin 0.2 saves a model whose framing is 0.2,
    so the Recognizer cuts faces as training did."""
    pytest.importorskip("torch", reason="training needs the train extra")
    from test_kdef import write_kdef

    from ferkit.models.checkpoint import load_checkpoint
    from ferkit.training.train import train

    root = write_kdef(tmp_path / "k", sessions=("A",), angles=("S",))
    run = train("boulis-baseline", str(root), str(tmp_path / "runs"), device="cpu", progress=False,
                overrides={"epochs": 1, "batch_size": 16, "dataset": "kdef",
                           "source_options": {"face_crop": True, "face_margin": 0.2}},
                limit_train_batches=1, limit_val_batches=1)
    _, spec = load_checkpoint(run / "best.ckpt")
    assert spec["input_config"].face_margin == 0.2


def test_training_on_uncut_images_keeps_the_declared_framing():
    pytest.importorskip("torch", reason="training needs the train extra")
    from ferkit.training.module import FerLitModule

    m = FerLitModule.for_model("boulis-baseline")
    m.record_framing(None)  # FER2013 / folders: the images are used as given
    assert m.hparams["input_config"]["face_margin"] == 0.0
    m.record_framing(0.1)
    assert m.model.input_config.face_margin == 0.1 == m.hparams["input_config"]["face_margin"]


def test_evaluation_names_a_framing_mismatch():
    pytest.importorskip("torch")  # evaluates a checkpoint
    from ferkit.data.sources import Index
    from ferkit.evaluation.evaluate import framing_mismatch

    idx = Index("kdef", "/k", "test", [], [], loader=None, fingerprint="", face_margin=0.1)
    assert "margin 0.1" in framing_mismatch(idx, InputConfig(face_margin=0.0))
    assert framing_mismatch(idx, InputConfig(face_margin=0.1)) is None
    assert framing_mismatch(Index("fer2013", "/f", "test", [], [], None, ""), InputConfig()) is None


def test_evaluate_warns_when_the_faces_are_framed_unlike_the_models(tmp_path):
    """A checkpoint whose run cut KDEF faces with margin 0.1 while the model declares 0.0
    (here a slim file dropped into the run folder) is evaluated with a warning naming both."""
    pytest.importorskip("torch", reason="evaluation needs the train extra")
    import yaml
    from test_kdef import write_kdef
    from test_recognizer import make_slim

    from ferkit.evaluation.evaluate import evaluate_checkpoints
    from ferkit.training.recipes import load_recipe

    root = write_kdef(tmp_path / "k", subjects=("F01", "M01"), sessions=("A",), angles=("S",))
    run = tmp_path / "run"
    run.mkdir()
    rec = {**load_recipe("boulis-baseline").to_dict(), "dataset": "kdef", "source_options": {"face_crop": True}}
    (run / "config.yaml").write_text(yaml.safe_dump({"recipe": rec, "data": str(root)}))
    make_slim(run / "best.ckpt")
    with pytest.warns(UserWarning, match=r"margin 0\.1 .*framing is 0"):
        rep = evaluate_checkpoints(run / "best.ckpt", root, "all", batch_size=8, device="cpu", progress=False)
    assert rep["checkpoints"] == [str(run / "best.ckpt")] and sum(rep["confusion"][0]) >= 1


def test_a_thin_image_is_framed_without_a_full_resolution_square():
    """Detector "none" frames the whole image: a 1 x 1,000,000 array asked OpenCV for a
    10^12-byte padded square (cv2.error 'Insufficient memory'). Thin images are shrunk first,
    and the face looks as the full-resolution cut would."""
    import numpy as np

    from ferkit.faces.framing import convert_channels, crop_face, face_square, resize_square
    from ferkit.models.input_config import InputConfig

    cfg = InputConfig()
    out = crop_face(np.full((1, 10**6), 77, np.uint8), (0, 0, 10**6, 1), cfg)
    assert out.shape == (cfg.frame, cfg.frame, cfg.channels) and (out == 77).all()
    rng = np.random.default_rng(0)
    thin = np.repeat(rng.integers(0, 255, (1, 40), dtype=np.uint8), 50, axis=1).repeat(4, axis=0)  # 4 x 2000
    box = (0, 0, 2000, 4)
    full = resize_square(convert_channels(face_square(thin, box), cfg.channels), cfg.frame)
    fast = crop_face(thin, box, cfg)
    assert fast.shape == full.shape
    assert np.abs(fast.astype(int) - full.astype(int)).mean() < 2.0
