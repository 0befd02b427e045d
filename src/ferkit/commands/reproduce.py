"""ferkit reproduce PAPER --data DIR [--budget-min N] [--stop-after MIN] [--out DIR]"""

from __future__ import annotations

import argparse
import sys

from ferkit.commands._args import minutes, out_folder


def add_parser(sub):
    p = sub.add_parser(
        "reproduce",
        help="run a seed paper's experiments and print its table beside ours",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run a paper's experiments in order (each an ordinary 'ferkit train' run of the\n"
        "paper's recipe in OUT/PAPER/ROW/), evaluate them as the paper did, and write\n"
        "OUT/PAPER/README.md and table.json: the paper's figure, ours, the gap, epochs,\n"
        "training time and CPU per row. Run it again to resume: finished rows are kept,\n"
        "a stopped row continues from its last.ckpt. Without PAPER: the papers and rows.",
        epilog="papers: boulis, li, wiranata (FER2013); liu (RAF-DB); ayadi (RAVDESS).\n"
        "example:\n  ferkit reproduce boulis --data ../shared/datasets/fer2013 --budget-min 120",
    )
    p.add_argument("paper", nargs="?", help="boulis, li, wiranata, liu or ayadi (omit to list them)")
    p.add_argument("--data", help="the paper's corpus (see the list for the layout each needs)")
    p.add_argument("--out", type=out_folder, default="reproductions",
                   help="parent folder of OUT/PAPER/ (default: reproductions)")
    p.add_argument("--budget-min", type=minutes, metavar="MINUTES",
                   help="training time for the rows not started yet, split by their cost; each run "
                   "fits its schedule into its share (default: each recipe's full epochs)")
    p.add_argument("--stop-after", type=minutes, metavar="MINUTES",
                   help="stop for now after this many minutes of this command, across its rows: the "
                   "row in training checkpoints and stops, later rows wait (run the same command "
                   "again to continue)")
    p.add_argument("--scale", choices=["full", "toy"], default="full",
                   help="toy: 2 epochs of 2 batches per row, a check of the whole pipeline (default: full)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="default: auto")
    p.add_argument("--report-only", action="store_true",
                   help="train nothing: evaluate the finished rows and write the table (and --publish it)")
    p.add_argument("--publish", type=out_folder, metavar="DIR",
                   help="also copy the page to DIR/PAPER.md with its figures, run summaries and "
                   "measurements in DIR/PAPER/ (e.g. docs/reproductions), even when the run stops for "
                   "now; rows finished there and missing from --out (another machine did them) are "
                   "restored from it and not trained again")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)
    return p


def _listing() -> str:
    from ferkit.reproductions import list_papers, load_paper

    lines = []
    for name in list_papers():
        paper = load_paper(name)
        lines.append(f"{name}: {paper.title}")
        lines.append(f"  data: {paper.needs}")
        for r in paper.rows:
            what = f"needs {r.needs}" if r.needs else f"ensemble of {', '.join(r.ensemble)}" if r.ensemble \
                else f"recipe {r.recipe}"
            figures = ", ".join(f"{m.name} {m.paper:g}%" for m in r.measures if m.paper is not None)
            lines.append(f"  - {r.id}: {r.label} ({what})" + (f"; paper: {figures}" if figures else ""))
    return "\n".join(lines)


def run(args) -> int:
    from ferkit.errors import FerkitError

    if not args.paper:
        print(_listing())
        return 0
    if not args.data:
        raise FerkitError(f"--data is required: the corpus 'ferkit reproduce {args.paper}' trains on "
                          "(run 'ferkit reproduce' for the layouts)")
    print(f"ferkit reproduce: {args.paper}; loading PyTorch and Lightning...", flush=True)
    from pathlib import Path

    from ferkit.reproductions import load_paper, publish, reproduce
    from ferkit.training.stopping import RunStopped

    folder = Path(args.out) / load_paper(args.paper).name
    try:
        reproduce(args.paper, args.data, args.out, budget_min=args.budget_min, stop_after=args.stop_after,
                  scale=args.scale, device=args.device, progress=not args.no_progress,
                  report_only=args.report_only, restore=args.publish)
    except RunStopped as stop:
        if args.publish:
            print(f"published {publish(folder, Path(args.publish))} (the table so far)", file=sys.stderr)
        print(f"ferkit reproduce: {stop}; run the same command again to continue", file=sys.stderr)
        return stop.exit_code
    page = folder / "README.md"
    print(page.read_text())
    print(f"wrote {page}, {page.with_name('table.json')} and {folder / 'figures'}/")
    if args.publish:
        print(f"published {publish(folder, Path(args.publish))}")
    return 0
