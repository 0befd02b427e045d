"""Li's models (VGG, DAE, hybrids A/B), their recipes, and the robustness / denoise-preview commands."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("torch", reason="needs the train extra (PyTorch)")
import torch
import torch.nn.functional as F
from conftest import write_class_tree

from ferkit.cli import main
from ferkit.models.registry import create_model, model_task
from ferkit.training.module import FerLitModule
from ferkit.training.recipes import load_recipe

SMALL = {"width": 0.125, "hidden": 32}  # the paper's layout at 1/8 width: fast on CPU


def test_li_vgg_matches_the_papers_parameter_counts():
    m = create_model("li-vgg")
    trainable = sum(p.numel() for p in m.parameters() if p.requires_grad)
    # Keras counts BN moving mean + variance as non-trainable; PyTorch keeps them as buffers.
    moving = sum(b.numel() for n, b in m.named_buffers() if n.endswith(("running_mean", "running_var")))
    assert abs(trainable - 33_644_103) <= 0.01 * 33_644_103
    assert trainable == 33_644_103 and moving == 19_328
    assert sum(isinstance(x, torch.nn.Conv2d) for x in m.modules()) == 13
    assert [x.out_features for x in m.modules() if isinstance(x, torch.nn.Linear)] == [4096, 4096, 7]
    assert all(x.p == 0.4 for x in m.modules() if isinstance(x, torch.nn.Dropout))


@pytest.mark.parametrize("name", ["li-vgg", "li-hybrid-a", "li-hybrid-b"])
def test_classifiers_forward_backward(name):
    m = create_model(name, **SMALL)
    assert m.input_config.size == 48 and m.input_config.channels == 1
    assert m.input_config.mean == (0.0,) and m.input_config.std == (1.0,)  # [0,1] input, as in the paper
    out = m(torch.rand(3, 1, 48, 48))
    assert out.shape == (3, 7) and torch.isfinite(out).all()
    out.sum().backward()
    assert all(p.grad is not None for p in m.parameters() if p.requires_grad)


def test_dae_output_is_an_image_in_unit_range():
    dae = create_model("li-dae")
    assert [c.out_channels for c in dae.modules() if isinstance(c, torch.nn.Conv2d)] == [16, 24, 24, 16, 1]
    for x in (torch.rand(2, 1, 48, 48), torch.randn(2, 1, 48, 48) * 50):
        y = dae(x)
        assert y.shape == x.shape and float(y.detach().min()) >= 0 and float(y.detach().max()) <= 1
    assert dae(torch.rand(1, 1, 50, 50)).shape == (1, 1, 50, 50)  # sides not divisible by 4


def test_dae_loss_reconstructs_the_clean_target():
    torch.manual_seed(0)
    module = FerLitModule.for_model("li-dae")
    dae = module.model
    assert module.task == "reconstruct"
    x = torch.rand(4, 1, 48, 48)
    module.train()  # the training module, not the model, distorts the clean batch
    noisy = module._noisy(x)
    assert noisy.shape == x.shape and not torch.equal(noisy, x)
    loss, logits = dae.compute_loss(x, torch.zeros(4, dtype=torch.long), noisy=noisy)
    assert logits is None and loss.ndim == 0 and loss > 0
    module.eval()  # validation noise is seeded: the same loss every epoch
    a, _ = dae.compute_loss(x, noisy=module._noisy(x))
    b, _ = dae.compute_loss(x, noisy=module._noisy(x))
    assert torch.equal(a, b)
    # The target is the clean input: a DAE that outputs x exactly has the minimum (entropy) loss.
    assert a > F.binary_cross_entropy(x, x)
    # Without a noisy copy it is a plain autoencoder loss on x itself.
    assert not torch.equal(dae.compute_loss(x)[0], a)


def test_hybrid_a_dae_is_frozen_and_stays_in_eval_mode(tmp_path):
    torch.manual_seed(0)
    dae = create_model("li-dae")
    torch.save({"state_dict": {f"model.{k}": v for k, v in dae.state_dict().items()}}, tmp_path / "dae.ckpt")
    module = FerLitModule.for_model("li-hybrid-a", model_kwargs={"dae_checkpoint": str(tmp_path / "dae.ckpt"), **SMALL},
                          lr=1e-3)
    hyb = module.model
    assert int(hyb.dae_loaded) == 1
    for k, v in dae.state_dict().items():
        assert torch.equal(hyb.dae.state_dict()[k], v)
    before = {k: v.clone() for k, v in hyb.dae.state_dict().items()}
    vgg_before = {k: v.clone() for k, v in hyb.vgg.state_dict().items()}
    module.train()
    assert hyb.training and hyb.vgg.training and not hyb.dae.training
    assert not any(m.training for m in hyb.dae.modules())
    opt = module.configure_optimizers()["optimizer"]
    n_opt = sum(p.numel() for g in opt.param_groups for p in g["params"])
    assert n_opt == sum(p.numel() for p in hyb.vgg.parameters())  # the DAE is not even in the optimizer
    x, y = torch.rand(8, 1, 48, 48), torch.arange(8) % 7
    assert hyb.train_distortion is None  # frozen DAE: no reconstruction term, no noisy copy
    loss, _logits = hyb.compute_loss(x, y)
    loss.backward()
    assert all(p.grad is None for p in hyb.dae.parameters())
    opt.step()
    for k, v in hyb.dae.state_dict().items():
        assert torch.equal(v, before[k]), f"DAE weight {k} changed"
    assert any(not torch.equal(v, vgg_before[k]) for k, v in hyb.vgg.state_dict().items())


def test_hybrid_b_trains_everything_and_can_add_reconstruction():
    torch.manual_seed(0)
    module = FerLitModule.for_model("li-hybrid-b", model_kwargs={"recon_weight": 0.5, **SMALL})
    hyb = module.model.eval()  # eval: no dropout, seeded DAE corruption -> deterministic terms
    x, y = torch.rand(4, 1, 48, 48), torch.arange(4)
    module.eval()
    assert hyb.train_distortion == "random-gray"
    loss, _ = hyb.compute_loss(x, y, noisy=module._noisy(x))
    expected = F.cross_entropy(hyb(x), y) + 0.5 * hyb.dae.compute_loss(x, noisy=module._noisy(x))[0]
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    w = torch.arange(1.0, 8.0)
    weighted, _ = hyb.compute_loss(x, y, class_weights=w, label_smoothing=0.1, noisy=module._noisy(x))
    expected = F.cross_entropy(hyb(x), y, weight=w, label_smoothing=0.1) + 0.5 * hyb.dae.compute_loss(
        x, noisy=module._noisy(x))[0]
    assert weighted.item() == pytest.approx(expected.item(), rel=1e-5)
    module.train()
    assert hyb.dae.training and all(p.requires_grad for p in hyb.parameters())
    hyb.compute_loss(x, y, noisy=module._noisy(x))[0].backward()
    assert all(p.grad is not None for p in hyb.parameters())


def test_bad_dae_checkpoint_is_a_clear_error(tmp_path):
    from ferkit.errors import FerkitError

    vgg = create_model("li-vgg", **SMALL)
    torch.save({"state_dict": vgg.state_dict()}, tmp_path / "vgg.ckpt")
    with pytest.raises(FerkitError, match="not a li-dae checkpoint"):
        create_model("li-hybrid-a", dae_checkpoint=str(tmp_path / "vgg.ckpt"))


def test_recipes_follow_table_1():
    for name in ("li-vgg", "li-dae", "li-hybrid-a", "li-hybrid-b"):
        r = load_recipe(name)
        assert (r.epochs, r.batch_size, r.optimizer, r.lr, tuple(r.betas)) == (150, 16, "adam", 0.05, (0.9, 0.99))
        assert (r.early_stopping_patience, r.plateau_factor, r.val_fraction, r.augment) == (20, 0.5, 0.2, "li")
        assert load_recipe(f"{name}-tuned").lr < 0.05
    assert model_task(load_recipe("li-dae").model) == "reconstruct"
    assert load_recipe("li-vgg-distaug").distortion_augment == "mix:p=0.5"


def test_the_model_not_the_recipe_says_it_reconstructs():
    from ferkit.errors import FerkitError
    from ferkit.training.recipes import Recipe

    # An old run's config.yaml still carries ``task``: it loads when it agrees with the model ...
    old = Recipe.from_dict({"name": "old-dae", "model": "li-dae", "task": "reconstruct"})
    assert old.model == "li-dae" and "task" not in old.to_dict()
    # ... and a contradiction is a one-line error instead of a silently ignored field.
    with pytest.raises(FerkitError, match="contradicts model 'li-vgg'"):
        Recipe.from_dict({"name": "bad", "model": "li-vgg", "task": "reconstruct"})


def test_block_dropout_only_changes_the_conv_blocks_dropout():
    m = create_model("li-vgg", block_dropout=0.0)
    block = [x.p for x in m.features if isinstance(x, torch.nn.Dropout)]
    dense = [x.p for x in m.classifier if isinstance(x, torch.nn.Dropout)]
    assert block == [0.0] * 5 and dense == [0.4, 0.4]
    assert sum(p.numel() for p in m.parameters()) == 33_644_103  # same network, same count
    hyb = create_model("li-hybrid-b", block_dropout=0.0, **SMALL)
    assert [x.p for x in hyb.vgg.features if isinstance(x, torch.nn.Dropout)] == [0.0] * 5


def test_short_cpu_recipes():
    for name in ("li-vgg", "li-hybrid-a", "li-hybrid-b"):
        short, tuned = load_recipe(f"{name}-short"), load_recipe(f"{name}-tuned")
        assert short.model == tuned.model and short.model_kwargs["block_dropout"] == 0.0
        assert (short.epochs, short.batch_size, short.lr) == (4, 64, 0.0002)
        assert (short.augment, short.val_fraction, short.seed) == (tuned.augment, tuned.val_fraction, tuned.seed)


# --- end to end on a tiny generated dataset -----------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny li-dae run, then li-vgg and li-hybrid-a runs (1/8 width) on a generated class tree."""
    from ferkit.training.train import train

    root = tmp_path_factory.mktemp("li")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FERKIT_CACHE", str(root / "cache"))
        data = write_class_tree(root / "tree", n=5)
        kw = {"limit_train_batches": 2, "limit_val_batches": 1, "progress": False}
        common = {"epochs": 1, "batch_size": 8, "augment": "none"}
        # train() exports FERKIT_RUN_DIR (for DDP workers); clear it so each run gets its own dir.
        mp.delenv("FERKIT_RUN_DIR", raising=False)
        dae = train("li-dae-tuned", str(data), str(root / "runs"), overrides=common, **kw)
        mp.delenv("FERKIT_RUN_DIR", raising=False)
        vgg = train("li-vgg-tuned", str(data), str(root / "runs"),
                    overrides={**common, "model_kwargs": SMALL, "distortion_augment": "mix:p=0.5"}, **kw)
        mp.delenv("FERKIT_RUN_DIR", raising=False)
        hyb = train("li-hybrid-a-tuned", str(data), str(root / "runs"),
                    overrides={**common, "model_kwargs": {**SMALL, "dae_checkpoint": str(dae / "best.ckpt")}}, **kw)
        yield {"data": data, "dae": dae, "vgg": vgg, "hyb": hyb, "root": root}


@pytest.mark.slow
def test_dae_run_is_a_reconstruction_run(trained):
    summary = json.loads((trained["dae"] / "summary.json").read_text())
    assert "val" not in summary  # no classification report for task=reconstruct
    metrics = (trained["dae"] / "metrics.csv").read_text()
    assert "val_loss" in metrics and "val_acc" not in metrics


@pytest.mark.slow
def test_hybrid_run_keeps_the_dae_weights(trained):
    dae = torch.load(trained["dae"] / "best.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    hyb = torch.load(trained["hyb"] / "best.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    for k, v in dae.items():
        assert torch.equal(hyb[k.replace("model.", "model.dae.", 1)], v), k


@pytest.mark.slow
def test_robustness_command_writes_json_markdown_plot(trained, tmp_path, capsys):
    out = tmp_path / "rob"
    rc = main(["robustness", str(trained["hyb"] / "best.ckpt"), "--data", str(trained["data"]), "--split", "test",
               "--out", str(out), "--severities", "1,5", "--distortions", "random-gray,jpeg,occlusion",
               "--no-progress", "--device", "cpu"])
    assert rc == 0
    rep = json.loads((out / "robustness.json").read_text())
    assert rep["n"] == 35 and set(rep["results"]) == {"random-gray", "jpeg", "occlusion"}
    assert set(rep["results"]["jpeg"]) == {"1", "5"}  # JSON keys
    accs = [a for v in rep["results"].values() for a in v.values()]
    assert rep["mean_corruption_accuracy"] == pytest.approx(sum(accs) / len(accs))
    assert rep["drop"] == pytest.approx(rep["clean"] - rep["mean_corruption_accuracy"])
    md = (out / "robustness.md").read_text()
    assert "| random-gray |" in md and "mean corruption" in md
    assert (out / "robustness.png").read_bytes()[:4] == b"\x89PNG"
    assert "| clean |" in capsys.readouterr().out
    # The same seed gives the same table; --limit takes a subset.
    rc = main(["robustness", str(trained["hyb"] / "best.ckpt"), "--data", str(trained["data"]), "--out",
               str(tmp_path / "rob2"), "--severities", "1,5", "--distortions", "random-gray,jpeg,occlusion",
               "--no-progress", "--device", "cpu"])
    assert json.loads((tmp_path / "rob2" / "robustness.json").read_text())["results"] == rep["results"]
    main(["robustness", str(trained["vgg"] / "best.ckpt"), "--data", str(trained["data"]), "--out",
          str(tmp_path / "rob3"), "--severities", "2", "--limit", "10", "--no-progress", "--device", "cpu"])
    assert json.loads((tmp_path / "rob3" / "robustness.json").read_text())["n"] == 10


@pytest.mark.slow
def test_robustness_bad_input_is_one_line(trained, tmp_path, capsys):
    ck = str(trained["vgg"] / "best.ckpt")
    assert main(["robustness", ck, "--data", str(trained["data"]), "--distortions", "fog", "--no-progress"]) == 2
    assert main(["robustness", ck, "--data", str(trained["data"]), "--severities", "7", "--no-progress"]) == 2
    assert main(["robustness", str(trained["dae"] / "best.ckpt"), "--data", str(trained["data"]),
                 "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "fog" in err and "1..5" in err and "denoise-preview" in err


@pytest.mark.slow
def test_evaluate_with_distortion(trained, capsys):
    ck = str(trained["vgg"] / "best.ckpt")
    base = ["evaluate", ck, "--data", str(trained["data"]), "--json", "--no-progress", "--device", "cpu"]
    assert main(base + ["--distortion", "random-gray:3"]) == 0
    a = json.loads(capsys.readouterr().out)
    assert main(base + ["--distortion", "random-gray:3"]) == 0
    b = json.loads(capsys.readouterr().out)
    assert a["n"] == 35 and a["confusion"] == b["confusion"]  # identical distorted copy
    assert main(base + ["--distortion", "random-gray:8"]) == 2
    assert "severity must be 1..5" in capsys.readouterr().err


@pytest.mark.slow
def test_denoise_preview(trained, tmp_path, capsys):
    out = tmp_path / "grid.png"
    rc = main(["denoise-preview", str(trained["dae"] / "best.ckpt"), "--data", str(trained["data"]), "--out",
               str(out), "--n", "4", "--distortion", "salt-pepper:4", "--no-progress", "--device", "cpu"])
    assert rc == 0 and out.read_bytes()[:4] == b"\x89PNG"
    rep = json.loads(out.with_suffix(".json").read_text())
    assert rep["n"] == 35 and rep["distortion"] == "salt-pepper:4"
    assert 0 < rep["psnr"]["distorted"] < 60 and -1 <= rep["ssim"]["denoised"] <= 1
    assert "PSNR" in capsys.readouterr().out
    assert main(["denoise-preview", str(trained["vgg"] / "best.ckpt"), "--data", str(trained["data"]),
                 "--out", str(tmp_path / "x.png"), "--no-progress"]) == 2
    assert "not a denoising autoencoder" in capsys.readouterr().err


def test_an_exported_dae_is_known_as_an_autoencoder(tmp_path):
    """A slim (exported) file has no training hyper-parameters: the robustness sweep used to
    read 'task' from them, took an exported DAE for a classifier and failed deep inside."""
    from ferkit.errors import FerkitError
    from ferkit.evaluation.robustness import robustness_sweep
    from ferkit.labels import FER7
    from ferkit.models.checkpoint import save_slim

    save_slim(create_model("li-dae"), {"model": "li-dae", "labels": list(FER7)}, tmp_path / "dae.pt")
    with pytest.raises(FerkitError, match="reconstructs images and has no class scores"):
        robustness_sweep(tmp_path / "dae.pt", tmp_path / "no-data-needed")
