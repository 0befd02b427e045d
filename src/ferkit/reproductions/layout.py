"""Where a reproduction keeps what: the names shared by the page writer
(:mod:`ferkit.reproductions.report`) and the restorer (:mod:`ferkit.reproductions.restore`).

``OUT/PAPER/`` holds ``README.md``, ``table.json``, ``FIGURES_DIR/`` (the chart and each row's
curves) and ``RUNS_DIR/ROW/`` (what of each row's run the page keeps: :data:`RUN_FILES` and
:data:`MEASURES_FILE`).
"""

FIGURES_DIR, RUNS_DIR = "figures", "runs"
#: a row's network, fp16, kept only when a later row needs it and it is small
MODEL_FILE = "model.pt"
#: a row's measurements with what defines each (views, distortion, split)
MEASURES_FILE = "measures.json"
#: What of a row's run folder a page keeps beside it: small files, and the network only as
#: the small :data:`MODEL_FILE` (never the checkpoints).
RUN_FILES = ("summary.json", "metrics.csv", "config.yaml", MODEL_FILE)
