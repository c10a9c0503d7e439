"""The machine a model runs on: torch threads, glibc's malloc tuning, the device and dtype asked for,
and the preflight that refuses, in one line, a model that will not fit in memory."""

from __future__ import annotations

import ctypes
import os
import sys
from pathlib import Path

from quantconf.models.builtin import BUILTIN_MODELS, builtin_gguf_path
from quantconf.errors import QuantconfError
from quantconf.models.files import is_quantized_checkpoint, weight_elements

def available_cores() -> int:
    """The cores this process may run on: its CPU affinity (taskset, a container's cpuset, a pytest-xdist
    worker pinned to one core), not the machine's count: more torch threads than cores makes OpenMP's
    threads wait on each other and runs slower than fewer."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


def set_threads(threads: int | None) -> int:
    """Set torch's intra-op threads (default: every core this process may use, `available_cores`; on
    2 cores this matters a lot) and keep freed memory in the process (`keep_freed_memory`)."""
    import torch

    n = threads or available_cores()
    if n < 1:
        raise QuantconfError(f"threads must be >= 1, got {threads}", param="threads")
    torch.set_num_threads(n)
    keep_freed_memory()
    return n


def keep_freed_memory() -> bool:
    """Tell glibc's malloc to keep freed blocks for reuse instead of handing them back to the OS.

    Every forward pass allocates and frees activations of tens of MB. By default glibc serves
    blocks that size with mmap and returns them on free, so the next pass page-faults all of it in
    again: ~1e6 page faults and ~10% of scoring time on hellaswag here (the same reason PyTorch's
    CPU tuning guide suggests jemalloc or tcmalloc). The cost is that the process keeps its peak
    memory. QUANTCONF_KEEP_FREED_MEMORY=0 turns it off; on other C libraries it does nothing.
    Returns whether the setting was applied."""
    if os.environ.get("QUANTCONF_KEEP_FREED_MEMORY", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl or another libc without mallopt
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    # mmap only above 1 GiB (glibc may cap it lower), never trim the heap top
    return bool(mallopt(m_mmap_threshold, 1 << 30)) and bool(mallopt(m_trim_threshold, 2**31 - 1))


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise QuantconfError("device cuda asked for but no CUDA device is available; use device cpu", param="device")
    if device not in ("cpu", "cuda"):
        raise QuantconfError(f"device must be cpu, cuda or auto, got {device!r}", param="device")
    return device


def torch_dtype(name: str):
    import torch

    table = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if name not in table:
        raise QuantconfError(f"dtype must be one of {', '.join(table)}, got {name!r}", param="dtype")
    return table[name]


DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


LOAD_OVERHEAD = 1.25  # activations, buffers and the allocator's slack over the bare weights


def available_memory(device: str) -> int | None:
    """Bytes free for a model on `device`: MemAvailable on CPU (Linux), the free memory of a CUDA device."""
    if device.startswith("cuda"):
        import torch

        return int(torch.cuda.mem_get_info()[0]) if torch.cuda.is_available() else None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _size(n_bytes: float) -> str:
    return f"{n_bytes / 1e9:.1f} GB" if n_bytes >= 1e9 else f"{n_bytes / 1e6:.1f} MB"


def preflight(spec: str, dtype: str, device: str) -> None:
    """Before loading: estimate the memory the model needs at `dtype` and refuse in one line when it will
    not fit, naming the dtype (or device) that would, instead of an out-of-memory kill."""
    if spec in BUILTIN_MODELS:
        source = builtin_gguf_path(spec)
    elif Path(spec).exists() and not (Path(spec).is_dir() and is_quantized_checkpoint(Path(spec))):
        source = Path(spec)  # quantized checkpoints are smaller than a dense estimate: not judged
    else:
        return
    n = weight_elements(source)
    have = available_memory(device)
    if not n or not have:
        return
    need = n * DTYPE_BYTES.get(dtype, 4) * LOAD_OVERHEAD
    if need <= have:
        return
    fits = [f"--dtype {d} (about {_size(n * b * LOAD_OVERHEAD)})" for d, b in DTYPE_BYTES.items()
            if b < DTYPE_BYTES.get(dtype, 4) and n * b * LOAD_OVERHEAD <= have][:1]
    if not device.startswith("cuda"):
        cuda_free = available_memory("cuda")
        if cuda_free and need <= cuda_free:
            fits.append(f"--device cuda ({_size(cuda_free)} free)")
    raise QuantconfError(f"model {spec} ({n:,} weights) needs about {_size(need)} at {dtype} on {device}, and "
                         f"{_size(have)} is available; "
                         + (f"try {' or '.join(fits)}" if fits else "use a machine with more memory"),
                         param="dtype")
