"""ferkit.inference.batch.predict_inputs: the predict command's work as a library call
(no argparse): inputs walked, bad ones skipped and counted by class, records written."""

from __future__ import annotations

import io
import json
import shutil

from test_recognizer import ASTRONAUT

from ferkit.inference.batch import predict_inputs
from ferkit.inference.recognizer import Recognizer


def test_predict_inputs_counts_writes_and_skips(tmp_path):
    (tmp_path / "in").mkdir()
    shutil.copy(ASTRONAUT, tmp_path / "in" / "a.png")
    (tmp_path / "in" / "broken.jpg").write_bytes(b"not an image")
    (tmp_path / "in" / "notes.txt").write_text("ignored")
    (tmp_path / "ann").mkdir()
    rec = Recognizer.from_pretrained("default", backend="onnx")
    out = io.StringIO()
    report = predict_inputs(rec, [str(tmp_path / "in")], out, fmt="jsonl", batch_size=2,
                            annotated_dir=tmp_path / "ann", progress=False)
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [r["label"] for r in records] == ["happy"] and records[0]["source"].endswith("a.png")
    assert report.stats["images"] == 1 and report.stats["faces"] == 1 and report.stats["annotated"] == 1
    assert sum(report.skipped.values()) == 1 and sum(len(v) for v in report.ignored.values()) == 1
    assert report.exit_code == 1 and not report.interrupted
    assert len(list((tmp_path / "ann").iterdir())) == 1
