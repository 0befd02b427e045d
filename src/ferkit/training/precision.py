"""``precision: auto`` on a CPU: bf16 or fp32 by a measured probe, cached per CPU and network.

Whether bf16 autocast pays on a CPU is not written in its flags alone. Measured on this
project's machines (``../shared/GPU.md``): an AMD EPYC with AVX512-BF16 trains ``vgg-fer``
2.9x faster in bf16 than in fp32, an AVX2-only EPYC about 10x *slower* (bf16 emulated), and
an Intel Xeon without AMX 0.37-0.75x. So ``auto`` times a few training steps of the run's
own network (its input size, channels-last as the recipe says) in both precisions on the
CPU it runs on, and keeps bf16 only when it is clearly faster. The answer is cached in
``$FERKIT_CACHE/precision.json`` (default ``~/.cache/ferkit``), keyed by CPU model and flags,
thread count, PyTorch version, network, its arguments and input size, so a run pays the probe
(seconds) once per machine kind and network.

CUDA is not probed: ``auto`` is bf16 there when the device supports it.
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import torch

#: bf16 is chosen when its step takes at most this share of the fp32 step's time
BF16_MIN_GAIN = 0.9
_STEPS = 2  # timed steps per precision, after one untimed warm-up step
_CACHE_NAME = "precision.json"


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else ``platform.processor()``, else "unknown"."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_flags() -> list[str]:
    """The flags that decide CPU training speed that this CPU has: avx2, avx512f, avx512_bf16, amx_bf16."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    for line in text.splitlines():
        if line.startswith("flags"):
            have = set(line.split(":", 1)[1].split())
            return [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in have]
    return []


def _cache_file() -> Path:
    from ferkit.data.cache import cache_dir

    return cache_dir() / _CACHE_NAME


def _key(recipe, input_size: int, channels: int) -> str:
    kwargs = json.dumps(recipe.model_kwargs or {}, sort_keys=True, default=str)
    # flags too: virtual machines report "AMD EPYC" for CPUs of different generations
    return (f"{cpu_model()} [{' '.join(cpu_flags())}] | {torch.get_num_threads()} threads | torch {torch.__version__} | {recipe.model} "
            f"{kwargs} | {channels}x{input_size} | channels_last={recipe.channels_last}")


def _read_cache() -> dict:
    try:
        data = json.loads(_cache_file().read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_cache(data: dict) -> None:
    path = _cache_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only cache only means probing again next time


def _time_steps(model, x, y, bf16: bool, give_up_s: float | None) -> float | None:
    """Seconds per SGD step (forward, loss, backward, update), or None past ``give_up_s``."""
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    ctx = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if bf16 else torch.enable_grad

    def step():
        opt.zero_grad(set_to_none=True)
        with ctx():
            out = model(x)
        # Any scalar of the output costs the same backward pass: the probe times compute, and
        # autoencoders (images out) and classifiers (logits out) both take it.
        outs = out if isinstance(out, (tuple, list)) else (out,)
        loss = sum(o.float().square().mean() for o in outs if torch.is_tensor(o) and o.is_floating_point())
        loss.backward()
        opt.step()

    t = time.perf_counter()
    step()  # warm-up: oneDNN primitive creation, lazy allocations
    if give_up_s is not None and time.perf_counter() - t > give_up_s:
        return None
    t = time.perf_counter()
    for _ in range(_STEPS):
        step()
    return (time.perf_counter() - t) / _STEPS


def probe_cpu_precision(recipe, input_size: int, channels: int, batch: int | None = None) -> dict:
    """Time training steps of ``recipe``'s network in fp32 and bf16 autocast on this CPU.

    Returns ``{"precision": "32-true" | "bf16-mixed", "fp32_s_per_step", "bf16_s_per_step"
    (None when bf16 was given up as over 3x slower), "batch", "cpu", "flags"}``.
    """
    from ferkit.models.registry import create_model

    batch = batch or min(64, recipe.batch_size)
    state = torch.random.get_rng_state()  # the probe must not move the run's random stream
    try:
        torch.manual_seed(0)
        model = create_model(recipe.model, num_classes=len(recipe.labels or range(7)), in_chans=channels,
                             input_size=input_size, **(recipe.model_kwargs or {}))
        model.train()
        fmt = torch.channels_last if recipe.channels_last else torch.contiguous_format
        model = model.to(memory_format=fmt)
        x = torch.randn(batch, channels, input_size, input_size).contiguous(memory_format=fmt)
        y = None
        fp32 = _time_steps(model, x, y, bf16=False, give_up_s=None)
        bf16 = _time_steps(model, x, y, bf16=True, give_up_s=3 * (_STEPS + 1) * fp32)
    finally:
        torch.random.set_rng_state(state)
    fast = bf16 is not None and bf16 <= BF16_MIN_GAIN * fp32
    return {"precision": "bf16-mixed" if fast else "32-true", "fp32_s_per_step": round(fp32, 5),
            "bf16_s_per_step": round(bf16, 5) if bf16 is not None else None, "batch": batch,
            "cpu": cpu_model(), "flags": cpu_flags()}


def auto_cpu_precision(recipe, input_size: int, channels: int, *, verbose: bool = True) -> str:
    """``32-true`` or ``bf16-mixed`` for ``recipe`` on this CPU: cached, else probed (see the module)."""
    key = _key(recipe, input_size, channels)
    cache = _read_cache()
    hit = cache.get(key)
    if isinstance(hit, dict) and hit.get("precision") in ("32-true", "bf16-mixed"):
        return hit["precision"]
    if verbose:
        print(f"precision auto: timing a few {recipe.model} steps in fp32 and bf16 on this CPU "
              f"({cpu_model()}), once...", flush=True)
    result = probe_cpu_precision(recipe, input_size, channels)
    result["measured"] = time.strftime("%Y-%m-%d %H:%M")
    cache = _read_cache()  # another run may have written meanwhile
    cache[key] = result
    _write_cache(cache)
    if verbose:
        bf = f"{result['bf16_s_per_step']:.3f} s" if result["bf16_s_per_step"] is not None else "over 3x slower"
        print(f"precision auto: fp32 {result['fp32_s_per_step']:.3f} s/step, bf16 {bf} "
              f"(batch {result['batch']}) -> {result['precision']}; cached in {_cache_file()}", flush=True)
    return result["precision"]
