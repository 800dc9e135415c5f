"""What a timing was measured on: CPU model and ISA flags, cores, oneDNN, versions, GPUs.

Every benchmark row carries this (docs/results.md "Step time"): statements such as
"bfloat16 is slower here" hold for a kind of CPU, not in general. On x86 the
relevant flags are AMX (``amx_bf16``, ``amx_tile``), AVX-512 BF16/FP16 and
AVX2/FMA; bfloat16 convolutions ran 3-5x faster than float32 on AMX CPUs and
slower on CPUs without BF16 instructions (measured, docs/results.md).
"""
import os
import platform
from typing import Dict, List

#: /proc/cpuinfo flags that decide which kernels TF's oneDNN can use.
RELEVANT_FLAGS = ("amx_bf16", "amx_tile", "amx_int8", "avx512_bf16", "avx512_fp16",
                  "avx512f", "avx512_vnni", "avx2", "fma")


def _cpuinfo() -> Dict[str, str]:
    out = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if ":" in line:
                    k, v = line.split(":", 1)
                    out.setdefault(k.strip(), v.strip())
    except OSError:
        pass
    return out


def cpu_flags() -> List[str]:
    """The RELEVANT_FLAGS this CPU has (empty where /proc/cpuinfo is absent)."""
    have = set(_cpuinfo().get("flags", "").split())
    return [f for f in RELEVANT_FLAGS if f in have]


def has_bfloat16_hardware() -> bool:
    """Whether the CPU executes bfloat16 natively (AVX-512 BF16 or AMX)."""
    flags = cpu_flags()
    return "avx512_bf16" in flags or "amx_bf16" in flags


def has_amx() -> bool:
    """Whether the CPU has AMX bfloat16 tiles (where bfloat16 pays most, measured)."""
    return "amx_bf16" in cpu_flags()


def onednn_enabled() -> bool:
    """TF's oneDNN kernels: on by default on x86 Linux, off with TF_ENABLE_ONEDNN_OPTS=0."""
    v = os.environ.get("TF_ENABLE_ONEDNN_OPTS")
    if v is not None:
        return v.strip() not in ("0", "false", "False")
    return platform.machine() in ("x86_64", "AMD64")


def describe() -> dict:
    """A JSON-able description of this machine for benchmark rows."""
    import keras
    import tensorflow as tf

    info = _cpuinfo()
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count()
    gpus = []
    for d in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(d)
        gpus.append(details.get("device_name", d.name))
    return {"cpu_model": info.get("model name", platform.processor() or platform.machine()),
            "cpu_flags": cpu_flags(), "cores": cores, "onednn": onednn_enabled(),
            "tensorflow": tf.__version__, "keras": keras.__version__, "gpus": gpus}


def one_line(hw: dict) -> str:
    """``hw`` (from :func:`describe`) in one line for tables and logs."""
    gpu = ", GPU " + "/".join(hw["gpus"]) if hw.get("gpus") else ", no GPU"
    return (f"{hw['cpu_model']} ({hw['cores']} cores; {' '.join(hw['cpu_flags']) or 'no listed ISA flags'}"
            f"; oneDNN {'on' if hw['onednn'] else 'off'}){gpu}; TF {hw['tensorflow']}, "
            f"Keras {hw['keras']}")


def bfloat16_warning(have_gpu: bool = False):
    """The one-line warning for --mixed_precision on a CPU without bfloat16 instructions, or None.

    Measured on such a CPU (2 cores, no avx512_bf16/amx_bf16; docs/results.md "Step time"): bfloat16
    matmul 160 vs 227 GFLOP/s float32, 3x3 conv fwd+bwd 190 vs 347, Conv-Large VAT step
    11.8 s vs 5.9 s — oneDNN emulates bfloat16 there.
    """
    if have_gpu or has_bfloat16_hardware() or platform.machine() not in ("x86_64", "AMD64"):
        return None
    return ("--mixed_precision on a CPU without AVX-512 BF16 or AMX: bfloat16 is emulated and "
            "slower than float32 here (measured on such a CPU: Conv-Large VAT step 11.8 s vs "
            "5.9 s float32); drop --mixed_precision unless you want its numerics")
