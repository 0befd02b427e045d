"""Run several ``ferkit`` commands in one Python process (one PyTorch import, one warm cache).

Reads a JSON list of ``{"id": ..., "argv": [...]}`` on stdin; for each, runs
``ferkit.cli.main(argv)`` with its standard output captured (or, for ``{"id", "flops":
{model, in_chans, input_size, model_kwargs}}``, counts the model's forward FLOPs) and prints
one JSON line
``{"id", "rc", "stdout", "stderr", "seconds"}`` as soon as it is done, so the caller can
record every finished result even if a later one hangs. Used by ``tools/gpu/job.py``.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import time
import traceback


def main() -> int:
    from ferkit.cli import main as ferkit_main

    for task in json.load(sys.stdin):
        out, err = io.StringIO(), io.StringIO()
        t = time.monotonic()
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                if "flops" in task:
                    from ferkit.models.flops import forward_flops

                    f = task["flops"]
                    print(forward_flops(f["model"], in_chans=f.get("in_chans"), input_size=f.get("input_size"),
                                        **(f.get("model_kwargs") or {})))
                    rc = 0
                else:
                    rc = ferkit_main(task["argv"])
        except SystemExit as e:  # argparse and usage errors
            rc = e.code if isinstance(e.code, int) else 2
        except Exception:  # noqa: BLE001 - one failed task must not stop the others
            rc = 1
            err.write(traceback.format_exc())
        line = {"id": task["id"], "rc": rc, "stdout": out.getvalue()[-200_000:], "stderr": err.getvalue()[-4000:],
                "seconds": round(time.monotonic() - t, 2)}
        print(json.dumps(line), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
