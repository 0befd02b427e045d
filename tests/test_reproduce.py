"""``ferkit reproduce PAPER``: every paper's rows run end to end at toy scale on a small
FER2013-layout set (or the RAF-DB / RAVDESS fixtures), the table has the paper's figures
beside ours, a re-run resumes instead of training again, a stopped row continues, and a
missing corpus is one line naming what to download."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

pytest.importorskip("lightning", reason="needs the train extra (PyTorch, Lightning)")
from conftest import write_class_tree

from ferkit.cli import main
from ferkit.reproductions import list_papers, load_paper, plan
from ferkit.training.stopping import RunStop

SHARED = Path(__file__).resolve().parents[2] / "shared"


@pytest.fixture(scope="module")
def fer(tmp_path_factory):
    """FER2013's Kaggle layout (Training_*/PublicTest_* names), 10 train and 6 test faces a class."""
    root = tmp_path_factory.mktemp("fer") / "fer2013"
    write_class_tree(root, splits=("train",), n=10, prefix={"train": "Training"})
    write_class_tree(root, splits=("test",), n=6, prefix={"test": "PublicTest"})
    return root


def _table(out: Path, paper: str) -> dict:
    return json.loads((out / paper / "table.json").read_text())


def test_every_paper_file_loads_and_names_the_corpus_it_needs():
    assert list_papers() == ["ayadi", "boulis", "li", "liu", "wiranata"]
    for name in list_papers():
        paper = load_paper(name)
        assert paper.needs and paper.rows
        for row in paper.rows:
            assert row.recipe or row.ensemble or row.needs or row.model


@pytest.mark.parametrize("paper", ["boulis", "wiranata", "li"])
def test_fer2013_papers_run_at_toy_scale_and_resume(paper, fer, tmp_path, capsys):
    out = tmp_path / "repro"
    assert main(["reproduce", paper, "--data", str(fer), "--out", str(out), "--scale", "toy", "--no-progress",
                 "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    table = _table(out, paper)
    spec = load_paper(paper)
    assert [r["row"] for r in table["rows"]] == [r.id for r in spec.rows]
    for row, r in zip(spec.rows, table["rows"]):
        if row.needs:
            assert r["status"].startswith("needs ") and "ours" not in r
            continue
        assert r["status"] == "done"
        for m in row.measures:
            got = r["ours"][m.name]
            # PublicTest stand-in: 6 x 7 faces; the run's own training faces: 10 x 7 less the 10% carve
            assert 0 <= got["accuracy"] <= 100 and got["n"] == (63 if m.split == "train" else 42)
        if not (row.ensemble or row.model):
            assert r["run"]["epochs_trained"] == 2 and r["run"]["cpu"]
    page = (out / paper / "README.md").read_text()
    for row in spec.rows:
        for m in row.measures:
            if m.paper is not None:
                assert f"{m.paper:.2f}" in page  # the paper's figure beside ours
    assert "ferkit reproduce" in printed and page in printed
    # figures: paper vs ours, each trained row's curves; small run files kept beside the page
    assert "figures/paper-vs-ours.png" in page and (out / paper / "figures" / "paper-vs-ours.png").is_file()
    assert "Per-class accuracy (%)" in page
    if any(m.split for r in spec.rows for m in r.measures):
        assert "own training faces (train split)" in page
    for row in spec.rows:
        if row.recipe and not row.needs:
            assert (out / paper / "figures" / f"{row.id}-curves.png").is_file()
            assert (out / paper / "runs" / row.id / "summary.json").is_file()
            assert not list((out / paper / "runs" / row.id).glob("*.ckpt"))
    # again: nothing is trained twice, the evaluations are read back
    mtimes = {p: p.stat().st_mtime for p in (out / paper).glob("*/best.ckpt")}
    assert main(["reproduce", paper, "--data", str(fer), "--out", str(out), "--scale", "toy", "--no-progress",
                 "--device", "cpu"]) == 0
    assert "done (kept)" in capsys.readouterr().out
    assert {p: p.stat().st_mtime for p in (out / paper).glob("*/best.ckpt")} == mtimes


def test_a_stopped_row_resumes_where_it_stopped(fer, tmp_path, capsys, monkeypatch):
    out = tmp_path / "repro"
    original = RunStop.on_train_batch_end

    def stop_in_first_row(self, trainer, pl_module, outputs, batch, batch_idx):
        if batch_idx == 0 and trainer.current_epoch == 0:
            self.reason = "stop-after"
        return original(self, trainer, pl_module, outputs, batch, batch_idx)

    monkeypatch.setattr(RunStop, "on_train_batch_end", stop_in_first_row)
    argv = ["reproduce", "boulis", "--data", str(fer), "--out", str(out), "--scale", "toy", "--no-progress",
            "--device", "cpu"]
    assert main(argv) == 0  # a planned stop: exit 0, "run the same command again"
    assert "run the same command again" in capsys.readouterr().err
    assert (out / "boulis" / "baseline" / "last.ckpt").is_file()
    assert _table(out, "boulis")["rows"][0]["status"] == "stopped"
    monkeypatch.setattr(RunStop, "on_train_batch_end", original)
    # --report-only trains nothing: the stopped row stays stopped, the rest wait
    mtime = (out / "boulis" / "baseline" / "last.ckpt").stat().st_mtime
    assert main([*argv, "--report-only"]) == 0
    rows = {r["row"]: r["status"] for r in _table(out, "boulis")["rows"]}
    assert rows["baseline"] == "stopped" and rows["baseline-weighted"] == "not started"
    assert rows["ensemble"] == "waits for baseline, baseline-weighted"
    assert (out / "boulis" / "baseline" / "last.ckpt").stat().st_mtime == mtime
    assert not (out / "boulis" / "baseline-weighted").exists()
    capsys.readouterr()
    assert main(argv) == 0
    assert "stopped: resumes from its last.ckpt" in capsys.readouterr().out
    assert _table(out, "boulis")["rows"][0]["run"]["epochs_trained"] == 2


def test_publish_copies_the_page_figures_and_run_files_into_docs(fer, tmp_path, capsys):
    out, docs = tmp_path / "repro", tmp_path / "docs" / "reproductions"
    assert main(["reproduce", "wiranata", "--data", str(fer), "--out", str(out), "--scale", "toy",
                 "--no-progress", "--device", "cpu", "--publish", str(docs)]) == 0
    assert f"published {docs / 'wiranata.md'}" in capsys.readouterr().out
    page = (docs / "wiranata.md").read_text()
    assert "](wiranata/figures/paper-vs-ours.png)" in page and "](figures/" not in page
    assert (docs / "wiranata" / "figures" / "random-init-curves.png").is_file()
    assert (docs / "wiranata" / "runs" / "random-init" / "metrics.csv").is_file()


@pytest.mark.parametrize("paper,kept,rebuilt", [("wiranata", "cae", "cae-init"), ("boulis", "baseline", "ensemble")])
def test_a_published_page_carries_finished_rows_to_a_fresh_machine(paper, kept, rebuilt, fer, tmp_path, capsys):
    """Run folders do not outlive their machine; the page published into the repository
    does. On a fresh machine (an empty --out) the same command restores the rows finished
    on the page instead of training them again, with their measurements, and the network a
    later row builds on (the CAE, an ensemble's members) as a small fp16 model.pt."""
    docs = tmp_path / "docs"
    argv = ["reproduce", paper, "--data", str(fer), "--scale", "toy", "--no-progress", "--device", "cpu",
            "--publish", str(docs)]
    assert main([*argv, "--out", str(tmp_path / "machine1")]) == 0
    first = _table(tmp_path / "machine1", paper)
    assert (docs / paper / "runs" / kept / "model.pt").is_file()
    assert (docs / paper / "runs" / kept / "measures.json").is_file()
    capsys.readouterr()

    import ferkit.reproductions as repro

    trained = []
    real = repro.train_row
    repro.train_row = lambda row, *a, **k: trained.append(row.id) or real(row, *a, **k)
    try:
        assert main([*argv, "--out", str(tmp_path / "machine2")]) == 0
    finally:
        repro.train_row = real
    assert "restored from" in capsys.readouterr().out
    assert trained == []  # nothing trained again
    second = _table(tmp_path / "machine2", paper)
    for a, b in zip(first["rows"], second["rows"]):
        assert (a["row"], a.get("status"), a.get("ours")) == (b["row"], b.get("status"), b.get("ours"))
        if a.get("run"):
            assert b["run"]["epochs_trained"] == a["run"]["epochs_trained"]
    # the network a later row builds on came back: the later row could be measured anew
    assert (tmp_path / "machine2" / paper / kept / "model.pt").is_file()
    assert any(r["row"] == rebuilt and r.get("ours") for r in second["rows"])


def test_a_row_a_later_one_needs_is_trained_again_when_its_network_was_not_kept(fer, tmp_path, capsys):
    docs = tmp_path / "docs"
    argv = ["reproduce", "wiranata", "--data", str(fer), "--scale", "toy", "--no-progress", "--device", "cpu",
            "--publish", str(docs)]
    assert main([*argv, "--out", str(tmp_path / "m1")]) == 0
    (docs / "wiranata" / "runs" / "cae" / "model.pt").unlink()  # as if it had been too big to keep
    for row in ("cae-init", "random-init"):  # the rows after it are not finished on the page
        shutil.rmtree(docs / "wiranata" / "runs" / row, ignore_errors=True)
    capsys.readouterr()
    assert main([*argv, "--out", str(tmp_path / "m2")]) == 0
    out = capsys.readouterr().out
    assert "cae: finished on the page, but cae-init needs its network" in out
    assert _table(tmp_path / "m2", "wiranata")["rows"][1]["status"] == "done"


def test_stop_after_is_one_clock_for_the_whole_command(fer, tmp_path, capsys, monkeypatch):
    """--stop-after N ends the command N minutes after it started, across rows: a row gets
    what is left, and a row with under half a minute left is not started."""
    import ferkit.reproductions as repro

    clock, calls = [1000.0], []

    def fake_train(row, data, folder, *, stop_after, **kw):
        calls.append((row.id, stop_after))
        clock[0] += 60 * 4.8  # this row trained for 4.8 minutes
        (folder / row.id).mkdir(parents=True)
        (folder / row.id / "summary.json").write_text("{}")

    def fake_measure(row, *a, **kw):
        return {m.name: {"accuracy": 50.0, "macro_f1": 0.5, "n": 42, "per_class": {}} for m in row.measures}

    monkeypatch.setattr(repro, "train_row", fake_train)
    monkeypatch.setattr(repro, "measure_row", fake_measure)
    monkeypatch.setattr(repro.time, "monotonic", lambda: clock[0])
    argv = ["reproduce", "boulis", "--data", str(fer), "--out", str(tmp_path), "--no-progress", "--stop-after", "5"]
    assert main(argv) == 0
    assert calls == [("baseline", 5.0)]
    assert "--stop-after 5 min reached before row 'baseline-weighted'" in capsys.readouterr().err
    rows = _table(tmp_path, "boulis")["rows"]
    assert rows[0]["status"] == "done" and rows[1]["status"] == "not started"


def test_the_budget_is_split_by_cost_over_rows_not_started(tmp_path):
    paper = load_paper("li")
    rows = plan(paper, tmp_path, 120)
    shares = {r["row"]: r["budget_min"] for r in rows if r["kind"] == "train"}
    assert shares == {"dae": 8.0, "vgg": 24.0, "hybrid-a": 32.0, "hybrid-b": 32.0, "vgg-distaug": 24.0}
    (tmp_path / "dae").mkdir()
    (tmp_path / "dae" / "summary.json").write_text("{}")  # finished: no share
    rows = plan(paper, tmp_path, 120)
    assert rows[0]["state"] == "done" and rows[0]["budget_min"] is None
    assert sum(r["budget_min"] or 0 for r in rows) == pytest.approx(120)


@pytest.mark.parametrize("paper, fixture, wants", [
    ("liu", "ravdess", "RAF-DB basic"), ("ayadi", "rafdb", "RAVDESS video"), ("boulis", "kdef", "FER2013"),
])
def test_a_missing_or_wrong_corpus_is_one_line(paper, fixture, wants, tmp_path, capsys):
    for data in (tmp_path / "nowhere", SHARED / "fixtures" / fixture):
        if not data.exists() and data.parent != tmp_path:
            pytest.skip("../shared/fixtures is absent")
        assert main(["reproduce", paper, "--data", str(data), "--out", str(tmp_path)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"{paper} needs {wants}" in err[0], err


def test_unknown_paper_and_missing_data_are_usage_errors(capsys):
    assert main(["reproduce", "nobody", "--data", "x"]) == 2
    assert "unknown paper 'nobody'; choose from ayadi, boulis, li, liu, wiranata" in capsys.readouterr().err
    assert main(["reproduce", "li"]) == 2
    assert "--data is required" in capsys.readouterr().err


def test_listing_names_every_paper_and_row(capsys):
    assert main(["reproduce"]) == 0
    out = capsys.readouterr().out
    for name in list_papers():
        assert f"{name}: " in out
    assert "paper: clean 58.78%, noisy 16.7%" in out


@pytest.mark.skipif(not (SHARED / "fixtures" / "rafdb").is_dir(), reason="../shared/fixtures is absent")
def test_liu_runs_at_toy_scale_on_rafdb_stand_ins(tmp_path, capsys):
    """The real RAF-DB label file and generated stand-in images named as it lists them."""
    import numpy as np
    from PIL import Image

    root = tmp_path / "basic"
    (root / "EmoLabel").mkdir(parents=True)
    lines = (SHARED / "fixtures" / "rafdb" / "EmoLabel" / "list_patition_label.txt").read_text().splitlines()
    keep = [ln for ln in lines if ln.startswith("train_")][:70] + [ln for ln in lines if ln.startswith("test_")][:21]
    (root / "EmoLabel" / "list_patition_label.txt").write_text("\n".join(keep) + "\n")
    (root / "Image" / "aligned").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for ln in keep:
        name = ln.split()[0].replace(".jpg", "_aligned.jpg")
        Image.fromarray(rng.integers(0, 255, (100, 100, 3), dtype=np.uint8)).save(root / "Image" / "aligned" / name)
    out = tmp_path / "repro"
    assert main(["reproduce", "liu", "--data", str(root), "--out", str(out), "--scale", "toy", "--no-progress",
                 "--device", "cpu"]) == 0, capsys.readouterr().err
    rows = _table(out, "liu")["rows"]
    guide = "needs ImageNet VGG16 weights for the guide (not downloadable here)"
    assert [r["status"] for r in rows] == ["done", "done", guide]
    shutil.rmtree(out)


def test_ayadi_runs_at_toy_scale_on_generated_ravdess_clips(tmp_path, capsys):
    """Clips named as RAVDESS names them (video-only speech, emotions 1-6) for a training, a
    validation and a test actor; the one real fixture clip is 'surprised', outside Ayadi's
    six classes."""
    pytest.importorskip("cv2")
    from test_ravdess import write_clip

    root = tmp_path / "ravdess"
    for actor in (1, 2, 17, 21):
        for emo in range(1, 7):
            write_clip(root / f"Actor_{actor:02d}" / f"02-01-{emo:02d}-01-01-01-{actor:02d}.mp4", n_frames=20,
                       value=30 * emo)
    out = tmp_path / "repro"
    assert main(["reproduce", "ayadi", "--data", str(root), "--out", str(out), "--scale", "toy", "--no-progress",
                 "--device", "cpu"]) == 0, capsys.readouterr().err
    rows = _table(out, "ayadi")["rows"]
    assert rows[0]["status"].startswith("needs ImageNet VGG16 weights")
    assert rows[1]["status"] == "done" and rows[1]["ours"]["plain"]["n"] == 12  # actor 21: 6 clips x 2 frames


def test_a_damaged_measures_file_is_a_missing_measurement_not_a_crash(tmp_path):
    from ferkit.reproductions import Measure
    from ferkit.reproductions.restore import stored_measure

    run = tmp_path / "row"
    run.mkdir()
    m = Measure(name="plain")
    assert stored_measure(run, m, "test") is None  # no file
    for text in ("{not json", "[1, 2]", '{"plain": {"tta": null, "distortion": null, "split": "val", "accuracy": 50}}'):
        (run / "measures.json").write_text(text)
        assert stored_measure(run, m, "test") is None  # broken, not an object, or taken another way
    (run / "measures.json").write_text('{"plain": {"tta": null, "distortion": null, "split": "test", "accuracy": 61.5}}')
    assert stored_measure(run, m, "test") == {"accuracy": 61.5}
