"""ferkit recipes | models | datasets: what is available."""

from __future__ import annotations


def add_parser(sub):
    p = sub.add_parser("recipes", help="list training recipes",
                       description="List the named training recipes shipped with ferkit, each "
                       "with the start of its description; 'ferkit recipes NAME' prints one "
                       "in full.")
    p.add_argument("name", nargs="?", help="show one recipe in full (YAML)")
    p.set_defaults(func=run_recipes)
    p = sub.add_parser("models", help="list shipped models and registered architectures",
                       description="List the models shipped with ferkit (the names --model takes), "
                       "then the registered model architectures with input size, channels and "
                       "parameter count.")
    p.add_argument("--params", action="store_true", help="also count parameters (builds each model)")
    p.set_defaults(func=run_models)
    p = sub.add_parser("datasets", help="list dataset layouts ferkit can read",
                       description="List the dataset layouts (sources) and their splits.")
    p.set_defaults(func=run_datasets)


def run_recipes(args) -> int:
    import yaml

    from ferkit.training.recipes import list_recipes, load_recipe

    if args.name:
        print(yaml.safe_dump(load_recipe(args.name).to_dict(), sort_keys=False), end="")
        return 0
    for r in list_recipes():
        print(f"{r.name:<28} model={r.model:<22} epochs={r.epochs:<4} {shorten(r.description, 70)}")
    return 0


def shorten(text: str, width: int) -> str:
    """``text`` on one line, cut at a word boundary with "..." when over ``width`` characters
    (a cut in mid-word, "projected " or "(neutral, calm, h", read as a typo)."""
    line = " ".join(text.split())
    if len(line) <= width:
        return line
    cut = line[: width - 3].rsplit(" ", 1)[0].rstrip(" ,;:(")
    return cut + "..."


def run_models(args) -> int:
    shipped = _shipped_models()
    if shipped:
        print("shipped models (--model NAME):")
        for name, arch, version, facts in shipped:
            print(f"  {name:<14} architecture={arch:<16} version={version}")
            if facts:
                print(f"  {'':<14} {facts}")
    try:
        # The registry is PyTorch code; the shipped models above run without it.
        from ferkit.models import create_model, get_entry, list_models
    except ModuleNotFoundError as e:
        print(f"architectures: listing them needs {e.name}, which is not installed: "
              "pip install 'ferkit[train]'")
        return 0
    if shipped:
        print("architectures (ferkit train RECIPE; recipes name one):")
    for name in list_models():
        e = get_entry(name)
        c = e.input_config
        extra = ""
        if args.params:
            m = create_model(name)
            extra = f" params={sum(p.numel() for p in m.parameters()):,}"
        crop = f" (crops of {c.crop_from})" if c.crop_from else ""
        print(f"{name:<24} input={c.size}x{c.size}x{c.channels}{crop}{extra}  {e.description}")
    return 0


def _shipped_models() -> list[tuple[str, str, str, str]]:
    """(name, architecture, version, facts) of each installed shipped model, read from its
    .onnx metadata (no PyTorch needed), with the same names the Recognizer and the service
    report. ``facts``: PublicTest accuracy, file size, compute and measured speed, from the
    figures the maintainers recorded in the model's ``meta`` when they shipped it."""
    from ferkit.inference.onnx_runtime import onnx_session, onnxruntime_available
    from ferkit.inference.pretrained import list_pretrained, shipped_path

    out = []
    for name in list_pretrained():
        path = shipped_path(name, "onnx")
        if not (path.is_file() and onnxruntime_available()):
            out.append((name, "?", "? (no .onnx or onnxruntime)", ""))
            continue
        _, meta = onnx_session(path, threads=1)
        out.append((name, meta["model"], meta["version"] or meta["model"],
                    model_facts(meta.get("meta") or {}, path.stat().st_size, meta["input_config"].get("tta"))))
    return out


def model_facts(meta: dict, nbytes: int, tta: str | None) -> str:
    """``FER2013 PublicTest 65.1% (66.0% ten-crop), 6.6 MB, 0.17 GFLOP/face, 2,900 crops/s (AMD EPYC)``:
    what a shipped model's ``meta`` records (``publictest``, ``gflop``, ``speed``), each part
    only when recorded."""
    parts = []
    acc = meta.get("publictest") or {}
    if isinstance(acc, dict) and acc.get("plain") is not None:
        text = f"FER2013 PublicTest {100 * acc['plain']:.1f}%"
        mode = acc.get("tta_mode") or tta
        if mode == "none":  # the file asks for no test-time views: one figure
            text += " (one view)"
        elif acc.get("tta") is not None:
            text += f" ({100 * acc['tta']:.1f}% {mode or 'TTA'})"
        parts.append(text)
    parts.append(f"{nbytes / 1e6:.1f} MB")
    if meta.get("gflop"):
        parts.append(f"{meta['gflop']:.2f} GFLOP/face")
    speed = meta.get("speed") or {}
    if isinstance(speed, dict) and speed.get("crops_per_s"):
        parts.append(f"{speed['crops_per_s']:,.0f} crops/s ({speed.get('cpu', 'CPU')}, {speed.get('threads', '?')} threads)")
    return ", ".join(parts)


def run_datasets(args) -> int:
    from ferkit.data.sources import list_sources

    for s in list_sources():
        print(f"{s.name:<14} splits={','.join(s.splits):<36} {s.description}")
    return 0
