"""Crop-trained models: centre/ten-crop geometry, the fer-vgg augmentation, ten-crop TTA in
evaluate, the ensemble path and the Recognizer (torch and onnxruntime), recorded defaults."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as TF
from test_light_install import _BLOCKER, REPO, run_light

from ferkit.data.crops import center_crop, crop_offsets, crop_views, mean_over_views, num_views
from ferkit.data.dataset import build_dataset
from ferkit.data.transforms import BatchAugment, make_augment, prepare_batch
from ferkit.errors import FerkitError
from ferkit.evaluation.ensemble import CropTTA, Ensemble, make_tta
from ferkit.evaluation.metrics import classification_report, predict_log_probs
from ferkit.inference.recognizer import Recognizer, onnx_available
from ferkit.labels import FER7
from ferkit.models import InputConfig, create_model
from ferkit.models.checkpoint import save_slim

SMALL_VGG = {"width": 8, "hidden": 16}


def _vgg(seed=0, **kw):
    torch.manual_seed(seed)
    return create_model("vgg-fer", **{**SMALL_VGG, **kw}).eval()


# -- geometry ---------------------------------------------------------------------------


@pytest.mark.parametrize("side,size", [(48, 40), (48, 44), (48, 45), (7, 4)])
def test_views_match_torchvision_ten_crop(side, size):
    x = torch.arange(2 * 3 * side * side, dtype=torch.float32).view(2, 3, side, side)
    # tl, tr, bl, br, centre of the image, then the same five of its mirror image
    want = torch.cat(TF.ten_crop(x, [size, size]))
    got = crop_views(x, size, "ten-crop")
    assert got.shape == (20, 3, size, size) and torch.equal(got, want)
    # numpy gives the same views (the onnxruntime Recognizer's path)
    assert np.array_equal(crop_views(x.numpy(), size, "ten-crop"), got.numpy())
    assert torch.equal(center_crop(x, size), TF.center_crop(x, [size, size]))


def test_crop_offsets_and_view_counts():
    assert crop_offsets(48, 40) == [(0, 0), (0, 8), (8, 0), (8, 8), (4, 4)]
    assert num_views("ten-crop", 40, 48) == 10 and num_views("mirror", 40, 48) == 2
    # A model on the whole face: ten-crop degenerates to the face and its mirror.
    x = np.random.default_rng(0).random((3, 1, 48, 48)).astype(np.float32)
    v = crop_views(x, 48, "ten-crop")
    assert num_views("ten-crop", 48, 48) == 2 and v.shape == (6, 1, 48, 48)
    assert np.array_equal(v[3:], x[..., ::-1])
    with pytest.raises(ValueError, match="larger"):
        crop_views(x, 56, "none")
    with pytest.raises(ValueError, match="unknown test-time mode"):
        crop_views(x, 40, "twelve-crop")


def test_mean_over_views_is_view_major():
    p = np.concatenate([np.full((2, 3), v, np.float32) for v in range(10)])  # view v = value v
    assert np.allclose(mean_over_views(p, 2), 4.5)


def test_prepare_batch_centre_crops_the_frame():
    cfg = InputConfig(size=40, channels=1, mean=(0.5,), std=(0.5,), crop_from=48)
    x = torch.randint(0, 256, (2, 1, 48, 48), dtype=torch.uint8)
    want = (x[..., 4:44, 4:44].float() / 255 - 0.5) / 0.5
    assert torch.allclose(prepare_batch(x, cfg), want)
    # a face of another size is resized to the 48 frame first, then cropped (never resized
    # straight to 40, which would show the model a wider field of view than in training)
    g = torch.linspace(0, 1, 96)
    big = (g.view(1, 1, 1, 96) * g.view(1, 1, 96, 1)).expand(2, 1, 96, 96)  # smooth face
    frame48 = torch.nn.functional.interpolate(big, size=(48, 48), mode="bilinear", antialias=True)
    direct40 = torch.nn.functional.interpolate(big, size=(40, 40), mode="bilinear", antialias=True)
    got = prepare_batch(big, cfg)
    assert torch.allclose(got, (frame48[..., 4:44, 4:44] - 0.5) / 0.5, atol=1e-6)
    assert (got - (direct40 - 0.5) / 0.5).abs().max() > 0.05


# -- augmentation ------------------------------------------------------------------------


def test_fer_vgg_preset_shapes_and_seeded_determinism():
    cfg = create_model("vgg-fer").input_config
    aug = make_augment("fer-vgg", cfg)
    assert aug.crop == pytest.approx(40 / 48) and aug.erase == 0.5
    x = torch.rand(16, 1, 48, 48)
    torch.manual_seed(5)
    a = aug(x)
    torch.manual_seed(5)
    b = aug(x)
    torch.manual_seed(6)
    c = aug(x)
    assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, c)
    assert prepare_batch(a, cfg).shape == (16, 1, 40, 40)
    # a model on the whole face gets no crop margin from the same preset
    assert make_augment("fer-vgg", create_model("resnet18-fer").input_config).crop == 1.0
    with pytest.raises(ValueError, match="unknown augmentation preset"):
        make_augment("fer-vgg-xl", cfg)


def test_random_crop_moves_within_the_margin_only():
    # A horizontal/vertical ramp: a pure translation by d pixels adds d/47 everywhere in
    # the centre crop (no edge pixel is replicated inside it while |d| <= the margin).
    ramp = torch.arange(48, dtype=torch.float32) / 47
    x = (ramp.view(1, 1, 1, 48) + 2 * ramp.view(1, 1, 48, 1)).expand(512, 1, 48, 48).contiguous()
    torch.manual_seed(0)
    out = BatchAugment(hflip=False, crop=40 / 48)(x)
    diff = (out - x)[..., 4:44, 4:44]
    dx = diff[..., 0, 1:] - diff[..., 0, :-1]
    assert dx.abs().max() < 1e-4  # a translation: the same offset over the whole crop
    # the offset is dx + 2 * dy pixels; each of dx, dy is within the 4-pixel margin
    d = diff[:, 0, 0, 0] * 47
    assert d.abs().max() <= 3 * 4 + 1e-3
    assert d.abs().max() > 8 and d.std() > 2  # and really varies from sample to sample


def test_random_erasing_stays_inside_the_crop():
    x = torch.ones(256, 1, 48, 48)
    torch.manual_seed(0)
    out = BatchAugment(hflip=False, crop=40 / 48, erase=1.0)._erase(x)
    erased = out == 0
    assert not erased[..., :4, :].any() and not erased[..., 44:, :].any()
    assert not erased[..., :4].any() and not erased[..., 44:].any()
    frac = erased.flatten(1).float().sum(1) / (40 * 40)
    assert (frac > 0).all() and frac.min() >= 0.015 and frac.max() <= 0.34
    torch.manual_seed(0)
    half = BatchAugment(hflip=False, erase=0.5)._erase(x)
    n = (half == 0).flatten(1).any(1).sum().item()
    assert 90 < n < 166  # about half of 256


# -- ten-crop TTA: evaluate, ensemble, Recognizer ----------------------------------------


def _manual_ten_crop(model, x01):
    """The reference: each of torchvision's ten crops through the model, probabilities averaged."""
    cfg = model.input_config
    frame = torch.nn.functional.interpolate(x01, size=(cfg.frame, cfg.frame), mode="bilinear",
                                            align_corners=False, antialias=x01.shape[-1] > cfg.frame)
    norm = (frame - 0.5) / 0.5
    with torch.no_grad():
        probs = [torch.softmax(model(v), 1) for v in TF.ten_crop(norm, [cfg.size, cfg.size])]
    return torch.stack(probs).mean(0)


def test_crop_tta_averages_the_ten_crops():
    m = _vgg()
    x = torch.rand(5, 1, 48, 48)
    assert torch.allclose(CropTTA("ten-crop")(m, x), _manual_ten_crop(m, x), atol=1e-6)
    assert isinstance(make_tta("ten-crop"), CropTTA)
    with pytest.raises(FerkitError, match="unknown test-time mode"):
        make_tta("eleven-crop")


def test_ensemble_ten_crop_gives_each_member_its_own_crops():
    a, b = _vgg(0), create_model("boulis-baseline", width=8, hidden=16).eval()
    ens = Ensemble([a, b], list(FER7))
    x = torch.rand(4, 1, 48, 48)
    got = ens.predict_proba(x, make_tta("ten-crop"))
    # b takes the whole face: its "ten crops" are the face and its mirror
    with torch.no_grad():
        pb = (torch.softmax(b((x - 0.5) / 0.5), 1) + torch.softmax(b((x.flip(-1) - 0.5) / 0.5), 1)) / 2
    assert torch.allclose(got, (_manual_ten_crop(a, x) + pb) / 2, atol=1e-6)


def test_evaluate_cli_ten_crop(tmp_path, tiny_tree, capsys):
    from ferkit.cli import main

    m = _vgg()
    path = tmp_path / "vgg.pt"
    save_slim(m, {"model": "vgg-fer", "labels": list(FER7), "model_kwargs": SMALL_VGG}, path)
    ds = build_dataset(tiny_tree, "test", m.input_config, progress=False)
    assert ds[0][0].shape == (1, 48, 48)  # decoded at the frame, not at the crop size

    def run(*extra, ckpts=(path,)):
        argv = ["evaluate", *map(str, ckpts), "--data", str(tiny_tree), "--json", "--no-progress", *extra]
        assert main(argv) == 0
        return json.loads(capsys.readouterr().out)

    plain, ten = run(), run("--tta", "ten-crop")
    assert ten["tta"] == {"mode": "ten-crop"} and ten["loss"] != plain["loss"]
    want, _ = predict_log_probs(m, ds, progress=False, tta=CropTTA("ten-crop"))
    ref = classification_report(want, torch.as_tensor(ds.targets), list(FER7))
    assert ten["loss"] == pytest.approx(ref["loss"], abs=1e-5)
    # the ensemble path (two files) takes the same option
    assert run("--tta", "ten-crop", ckpts=(path, path))["loss"] == pytest.approx(ref["loss"], abs=1e-5)
    # and so does compare (first column = reference)
    argv = ["compare", str(path), str(path), "--data", str(tiny_tree), "--json", "--no-progress"]
    assert main([*argv, "--tta", "ten-crop"]) == 0
    cmp = json.loads(capsys.readouterr().out)
    assert all(r["loss"] == pytest.approx(ref["loss"], abs=1e-5) for r in cmp["reports"].values())
    with pytest.raises(SystemExit) as e:
        main(["evaluate", str(path), "--data", str(tiny_tree), "--tta", "twelve"])
    assert e.value.code == 2 and "'ten-crop'" in capsys.readouterr().err


def test_recognizer_ten_crop_matches_torch_reference(tmp_path):
    m = _vgg()
    path = tmp_path / "vgg.pt"
    save_slim(m, {"model": "vgg-fer", "labels": list(FER7), "model_kwargs": SMALL_VGG}, path)
    faces = np.random.default_rng(0).integers(0, 256, (3, 48, 48), dtype=np.uint8)
    x01 = torch.from_numpy(faces).float().div(255).unsqueeze(1)
    rec = Recognizer.from_pretrained(path, backend="torch", detector="none", tta="ten-crop")
    assert rec.tta == "ten-crop"
    assert np.allclose(rec.classify_faces(faces), _manual_ten_crop(m, x01).numpy(), atol=1e-5)
    centre = Recognizer.from_pretrained(path, backend="torch", detector="none")
    with torch.no_grad():
        want = torch.softmax(m(prepare_batch(x01, m.input_config)), 1).numpy()
    assert centre.tta == "none" and np.allclose(centre.classify_faces(faces), want, atol=1e-5)
    if onnx_available():
        onnx = Recognizer.from_pretrained(path, backend="onnx", detector="none", tta="ten-crop")
        assert np.allclose(onnx.classify_faces(faces), rec.classify_faces(faces), atol=1e-4)
    with pytest.raises(FerkitError, match="unknown test-time mode"):
        Recognizer.from_pretrained(path, backend="torch", detector="none", tta="nine-crop")


def test_recorded_test_time_views_are_the_default(tmp_path):
    from ferkit.inference.export import export_model

    path = tmp_path / "vgg.pt"
    save_slim(_vgg(), {"model": "vgg-fer", "labels": list(FER7), "model_kwargs": SMALL_VGG}, path)
    out = export_model(path, "torch", tmp_path / "ten.pt", tta="ten-crop")["path"]
    assert Recognizer.from_pretrained(out, backend="torch", detector="none").tta == "ten-crop"
    # the caller still decides
    assert Recognizer.from_pretrained(out, backend="torch", detector="none", tta="none").tta == "none"
    if onnx_available():
        onnx = export_model(out, "onnx", tmp_path / "ten.onnx", check=False)["path"]
        assert Recognizer.from_pretrained(onnx, detector="none").tta == "ten-crop"


@pytest.fixture(scope="module")
def light_env(tmp_path_factory):
    """test_light_install's environment: torch and the other train extras unimportable."""
    site = tmp_path_factory.mktemp("light-site")
    (site / "sitecustomize.py").write_text(_BLOCKER)
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(REPO / "src")])}


def test_onnx_ten_crop_runs_without_torch(tmp_path, light_env):
    """The onnxruntime Recognizer cuts the ten crops with numpy only (the light install)."""
    if not onnx_available():
        pytest.skip("needs onnx + onnxruntime")
    from ferkit.inference.export import export_model

    path = tmp_path / "vgg.pt"
    m = _vgg()
    save_slim(m, {"model": "vgg-fer", "labels": list(FER7), "model_kwargs": SMALL_VGG}, path)
    onnx = export_model(path, "onnx", tmp_path / "vgg.onnx", tta="ten-crop", check=False)["path"]
    faces = np.random.default_rng(1).integers(0, 256, (2, 48, 48), dtype=np.uint8)
    np.save(tmp_path / "faces.npy", faces)
    want = _manual_ten_crop(m, torch.from_numpy(faces).float().div(255).unsqueeze(1)).numpy()
    r = run_light(light_env, f"""
        import json, numpy as np
        from ferkit.inference.recognizer import Recognizer
        rec = Recognizer.from_pretrained({str(onnx)!r}, detector="none")
        assert rec.backend == "onnx" and rec.tta == "ten-crop", rec
        print(json.dumps(rec.classify_faces(np.load({str(tmp_path / "faces.npy")!r})).tolist()))
        """)
    assert r.returncode == 0, r.stderr[-1500:]
    assert np.allclose(np.array(json.loads(r.stdout.strip().splitlines()[-1])), want, atol=1e-4)
