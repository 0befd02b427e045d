"""ferkit serve [--host 127.0.0.1] [--port 8000] [--model default|PATH] [--workers N] ..."""

from __future__ import annotations

import ipaddress
import logging
import os
import sys

from ferkit.commands._args import BACKEND_HELP, MODEL_HELP, finite_float
from ferkit.errors import FerkitError


def add_parser(sub):
    p = sub.add_parser(
        "serve",
        help="run the HTTP API and the browser page",
        description="Serve a model over HTTP with FastAPI + uvicorn: POST /v1/predict (one image, "
        "multipart field 'file' or the raw body), POST /v1/predict/batch (multipart 'files'), "
        "GET /v1/models, GET /healthz, the OpenAPI schema at /openapi.json and Swagger UI at /docs "
        "(served from the fastapi-offline package, no CDN), and a browser page at / (upload or "
        "webcam; no internet needed). Concurrent requests are micro-batched through the model.",
        epilog="Example: ferkit serve --model runs/x/best.ckpt --port 8080, then open "
        "http://127.0.0.1:8080/ or: curl -F file=@face.jpg http://127.0.0.1:8080/v1/predict",
    )
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default: 127.0.0.1, this machine only; 0.0.0.0 exposes it)")
    p.add_argument("--port", type=int, default=8000, help="TCP port (default: 8000)")
    p.add_argument("--model", default="default", help=MODEL_HELP)
    p.add_argument("--backend", default="auto", choices=["auto", "torch", "onnx"], help=BACKEND_HELP)
    from ferkit.faces import DEFAULT_MIN_FACE, detector_help

    p.add_argument("--detector", default="default", help=f"face detector: {detector_help()}")
    p.add_argument("--min-face", type=int, default=None, metavar="PX",
                   help=f"smallest face side to find, in pixels of the uploaded image (default "
                   f"{DEFAULT_MIN_FACE}; smaller costs detection time on large photos)")
    p.add_argument("--workers", type=int, default=1,
                   help="worker processes, each with its own model copy (default: 1)")
    p.add_argument("--max-upload-mb", type=finite_float, default=10,
                   help="largest image accepted, in MB; larger uploads get 413 (default: 10)")
    p.add_argument("--api-key", default=None,
                   help="require this X-API-Key header on /v1/* (default: env FERKIT_API_KEY, else none)")
    p.add_argument("--batch-window-ms", type=finite_float, default=5,
                   help="how long to wait for other requests to share a model call (default: 5)")
    p.add_argument("--max-batch", type=int, default=64, help="most images per model call (default: 64)")
    p.add_argument("--decode-mpix", type=finite_float, default=50,
                   help="most megapixels decoded at once across all requests; later uploads wait "
                   "(bounds decode memory; default: 50, one image of the largest size accepted)")
    p.add_argument("--queue-mpix", type=finite_float, default=None,
                   help="most megapixels of decoded images waiting for the model; later requests "
                   "wait (bounds detection memory too; default: 50, the largest image accepted)")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"],
                   help="uvicorn's log level; info logs one line per request (default: info)")
    p.set_defaults(func=run)
    return p


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run(args) -> int:
    try:
        import uvicorn

        from ferkit.serve.app import app_from_env, create_app
    except ImportError as e:
        raise FerkitError(f"serving needs the 'serve' extra: pip install 'ferkit[serve]' ({e.name} missing)") from None

    if not 1 <= args.port <= 65535:
        raise FerkitError(f"--port {args.port}: must be 1..65535")
    if args.workers < 1:
        raise FerkitError("--workers must be >= 1")
    if args.max_upload_mb <= 0:
        raise FerkitError("--max-upload-mb must be > 0")
    if args.max_batch < 1 or args.batch_window_ms < 0:
        raise FerkitError("--max-batch must be >= 1 and --batch-window-ms >= 0")
    if args.decode_mpix <= 0 or (args.queue_mpix is not None and args.queue_mpix <= 0):
        raise FerkitError("--decode-mpix and --queue-mpix must be > 0")
    if args.min_face is not None and args.min_face < 0:
        raise FerkitError("--min-face must be 0 or more pixels")
    api_key = args.api_key or os.environ.get("FERKIT_API_KEY") or None
    if not _is_loopback(args.host) and not api_key:
        print(f"ferkit: warning: serving on {args.host} without an API key: anyone who can reach "
              "this port can use the model", file=sys.stderr)

    settings = {"model": args.model, "max_upload_mb": args.max_upload_mb, "api_key": api_key,
                "batch_window_ms": args.batch_window_ms, "max_batch": args.max_batch,
                "backend": args.backend, "detector": args.detector,
                "decode_pixels": int(args.decode_mpix * 1e6),
                "queue_pixels": int(args.queue_mpix * 1e6) if args.queue_mpix else None,
                "min_face": args.min_face}
    # Internal errors are logged by 'ferkit.serve' (clients only get a reference).
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    flog = logging.getLogger("ferkit")
    flog.addHandler(handler)
    flog.setLevel(args.log_level.upper())
    # Load once here so a bad --model fails with one line before the server starts.
    app = create_app(**settings)
    docs = "docs" if any(getattr(r, "path", "") == "/docs" for r in app.routes) else "openapi.json"
    where = f"http://{'[' + args.host + ']' if ':' in args.host else args.host}:{args.port}/"
    rec = app.state.recognizer
    print(f"ferkit: serving model {rec.name} (version {rec.version}) on {where} "
          f"(page: {where}, API docs: {where}{docs}){' with API key' if api_key else ''}", file=sys.stderr)
    if args.workers == 1:
        uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
        return 0
    # Several processes need an import string; settings travel in the environment.
    del app
    os.environ.update({
        "FERKIT_SERVE_MODEL": args.model, "FERKIT_SERVE_BACKEND": args.backend,
        "FERKIT_SERVE_DETECTOR": args.detector, "FERKIT_SERVE_MAX_UPLOAD_MB": str(args.max_upload_mb),
        "FERKIT_SERVE_BATCH_WINDOW_MS": str(args.batch_window_ms),
        "FERKIT_SERVE_MAX_BATCH": str(args.max_batch),
        "FERKIT_SERVE_DECODE_MPIX": str(args.decode_mpix),
        **({"FERKIT_SERVE_QUEUE_MPIX": str(args.queue_mpix)} if args.queue_mpix else {}),
    })
    if args.min_face is not None:
        os.environ["FERKIT_SERVE_MIN_FACE"] = str(args.min_face)
    if api_key:
        os.environ["FERKIT_API_KEY"] = api_key
    assert app_from_env  # imported above so a missing extra fails before forking
    uvicorn.run("ferkit.serve.app:app_from_env", factory=True, host=args.host, port=args.port,
                workers=args.workers, log_level=args.log_level)
    return 0
