"""Training regularisers kept as recipe fields: distillation, MixUp, EMA weights."""

import pytest

pytest.importorskip("torch", reason="needs the train extra (PyTorch)")
import torch
import torch.nn.functional as F
from conftest import write_class_tree

from ferkit.cli import main
from ferkit.errors import FerkitError
from ferkit.labels import FER7
from ferkit.models.checkpoint import load_checkpoint, read_checkpoint
from ferkit.training.module import FerLitModule

FAST = ["--no-progress", "--device", "cpu", "--batch-size", "16", "--epochs", "2"]


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("teacher")
    data = write_class_tree(root / "data", n=6)
    assert main(["train", "boulis-baseline", "--data", str(data), "--out", str(root / "runs"), *FAST]) == 0
    (run,) = (root / "runs").iterdir()
    return data, run / "best.ckpt"


def test_soft_target_loss_matches_cross_entropy_on_one_hot_targets():
    m = FerLitModule.for_model("boulis-baseline", label_smoothing=0.1, mixup=0.2)
    logits, y = torch.randn(8, 7), torch.randint(0, 7, (8,))
    soft = F.one_hot(y, 7).float()
    ref = F.cross_entropy(logits, y, label_smoothing=0.1)
    assert torch.allclose(m._classify_loss(logits, y, soft), ref, atol=1e-6)


def test_distillation_loss_is_the_weighted_sum_of_ce_and_kl(teacher_run):
    _, ckpt = teacher_run
    m = FerLitModule.for_model("boulis-baseline", teacher=str(ckpt), distill_alpha=0.3, distill_temperature=3.0)
    x01 = torch.rand(4, 1, 48, 48)
    teacher, spec = load_checkpoint(ckpt)
    from ferkit.data.transforms import prepare_batch

    want_t = F.softmax(teacher(prepare_batch(x01, spec["input_config"])) / 3.0, dim=1)
    got_t = m._teacher_probs(x01)
    assert torch.allclose(got_t, want_t, atol=1e-5)
    logits, y = torch.randn(4, 7), torch.randint(0, 7, (4,))
    kl = (want_t * (want_t.log() - F.log_softmax(logits / 3.0, dim=1))).sum(1).mean()
    ref = 0.7 * F.cross_entropy(logits, y) + 0.3 * 9.0 * kl
    assert torch.allclose(m._classify_loss(logits, y, got_t), ref, atol=1e-5)
    # the teacher is no part of the student: not in its weights, nothing to train
    assert not any(k.startswith("teacher") or "_teachers" in k for k in m.state_dict())
    assert all(not p.requires_grad for p in m._teachers[0]["model"].parameters())


def test_teacher_with_other_labels_is_refused(teacher_run):
    _, ckpt = teacher_run
    with pytest.raises(FerkitError, match="labels"):
        FerLitModule.for_model("boulis-baseline", labels=list(reversed(FER7)), teacher=str(ckpt))


def test_train_with_teacher_mixup_and_ema(teacher_run, tmp_path):
    data, ckpt = teacher_run
    before = {k: v.clone() for k, v in load_checkpoint(ckpt)[0].state_dict().items()}
    assert main(["train", "ferkit-default", "--data", str(data), "--out", str(tmp_path / "runs"), *FAST,
                 "--set", f"teacher={ckpt}", "--set", "mixup=0.2", "--set", "ema_decay=0.9"]) == 0
    (run,) = (tmp_path / "runs").iterdir()
    raw = read_checkpoint(run / "best.ckpt")
    # EMA: the saved (validated) weights are the average, the live weights ride along for resume
    assert "current_model_state" in raw and "averaging_state" in raw
    w = "model.classifier.1.weight"
    assert not torch.equal(raw["state_dict"][w], raw["current_model_state"][w])
    model, spec = load_checkpoint(run / "best.ckpt")
    assert list(spec["labels"]) == list(FER7) and model(torch.zeros(2, 1, 48, 48)).shape == (2, 7)
    # training the student left the teacher file untouched
    after = load_checkpoint(ckpt)[0].state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_shipped_model_as_teacher_by_name():
    from ferkit.inference.pretrained import list_pretrained

    if "default" not in list_pretrained():
        pytest.skip("the shipped model is not installed")
    m = FerLitModule.for_model("boulis-baseline", teacher="default")
    p = m._teacher_probs(torch.rand(3, 1, 48, 48))
    assert p.shape == (3, 7) and torch.allclose(p.sum(1), torch.ones(3), atol=1e-5)


def test_ema_warmup_forgets_the_initial_weights():
    """Regression: a plain 0.999 EMA still holds ~20% of the init after 1,600 steps."""
    from torch.optim.swa_utils import AveragedModel, get_ema_avg_fn

    from ferkit.training.schedule import EMAWeights

    def plain():
        p = torch.nn.Parameter(torch.ones(1))  # e.g. BatchNorm's running_var starts at 1 ...
        avg = AveragedModel(torch.nn.ParameterList([p]), avg_fn=get_ema_avg_fn(0.999))
        for _ in range(1600):
            with torch.no_grad():
                p.mul_(0.9).add_(0.1 * 0.05)  # ... and settles near 0.05 within ~50 steps
            avg.update_parameters(torch.nn.ParameterList([p]))
        return float(avg.module[0].detach())

    def ours():
        net = torch.nn.BatchNorm1d(1)  # a parameter, float buffers and an integer buffer
        cb = EMAWeights(0.999)
        cb._average_model = AveragedModel(net, use_buffers=True)
        for _ in range(1600):
            with torch.no_grad():
                net.weight.mul_(0.9).add_(0.1 * 0.05)
                net.num_batches_tracked.add_(1)
            cb.update(net)
        avg = cb._average_model.module
        assert int(avg.num_batches_tracked) == 1600  # integer buffers follow the live model
        assert cb.updates == 1600 and int(cb._average_model.n_averaged) == 1600
        return float(avg.weight.detach())

    assert plain() > 0.2
    assert abs(ours() - 0.05) < 0.01


def test_ema_update_matches_the_warmup_formula():
    from torch.optim.swa_utils import AveragedModel

    from ferkit.training.schedule import EMAWeights

    net = torch.nn.Linear(2, 1)
    cb = EMAWeights(0.9)
    cb._average_model = AveragedModel(net, use_buffers=True)
    ref = net.weight.detach().clone()
    cb.update(net)  # the first update copies
    for n in range(1, 30):
        with torch.no_grad():
            net.weight.add_(1.0)
        d = min(0.9, (1 + n) / (10 + n))
        ref = d * ref + (1 - d) * net.weight.detach()
        cb.update(net)
    assert torch.allclose(cb._average_model.module.weight, ref, atol=1e-5)


@pytest.mark.parametrize("field, value", [("ema_decay", 1.5), ("mixup", -0.1), ("distill_alpha", 2),
                                          ("distill_temperature", 0)])
def test_out_of_range_regulariser_settings_are_usage_errors(field, value, tmp_path, capsys):
    data = write_class_tree(tmp_path / "data", n=2)
    rc = main(["train", "ferkit-default", "--data", str(data), "--out", str(tmp_path / "runs"), *FAST,
               "--set", f"{field}={value}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and field in err[0]
    assert not (tmp_path / "runs").exists()


def test_teacher_or_mixup_on_a_model_with_its_own_loss_is_refused():
    with pytest.raises(FerkitError, match="own loss"):
        FerLitModule.for_model("wiranata-cae", mixup=0.2)
