"""ONNX Runtime sessions: provider choice, tuned options, and the batch `Classifier`.

``--device auto`` takes TensorRT, then CUDA, then the CPU, and logs what it chose. Asking for
``cuda`` or ``tensorrt`` where ONNX Runtime cannot use it is a `ConfigError`, never a silent
CPU run: ONNX Runtime itself falls back to the CPU when a GPU provider fails to initialise,
so the providers the session actually got are checked after it is created.

On a GPU the batch goes through IO binding: the host batch is copied into a pinned
(page-locked) staging buffer, then asynchronously to a device buffer bound as the input,
and the logits are bound to a device buffer too, so ONNX Runtime does no allocation or
synchronous copy of its own per batch. The GPU paths cannot be exercised on a CPU-only
machine; they follow ONNX Runtime's documented IO-binding API.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from inference.choices import Device
from vision.errors import ConfigError

log = logging.getLogger(__name__)



_PROVIDER = {
    Device.TENSORRT: "TensorrtExecutionProvider",
    Device.CUDA: "CUDAExecutionProvider",
    Device.CPU: "CPUExecutionProvider",
}

#: Forward passes per batch by default, per device: large enough to fill a GPU, small enough
#: for CPU caches. A model with test-time views runs each chip that many times, so its
#: default batch holds that many times fewer chips (`default_batch_size`).
DEFAULT_BATCH_SIZE = {"cpu": 64, "cuda": 256, "tensorrt": 256}


def default_batch_size(device: str, views: int = 1) -> int:
    """Chips per batch when none is asked for: `DEFAULT_BATCH_SIZE` forward passes.

    For a ``d8`` model (8 views) on the CPU that is 8 chips, not 64: its throughput is the
    same from 4 to 64 chips per batch (208-213 chips/s on 2 cores), but a batch of 64 chips
    is 512 passes, which holds ~400 MB of activations per stream and pays for faulting them
    in on the first batch (0.2 s of system time), a large share of a small scene's run.
    """
    return max(1, DEFAULT_BATCH_SIZE[device] // max(1, views))


def default_streams(device: str, cores: int) -> int:
    """Batches to run at once. On the CPU, several batches each on a share of the cores beat
    one batch split over all of them: an intra-op thread pool runs in lockstep (every
    operator waits for its slowest thread), so a core lent to a reader stalls all of them,
    while independent streams lose only that core. GPU sessions run one stream."""
    if device != "cpu":
        return 1
    return max(1, min(cores, 4))


def available_devices() -> list[Device]:
    """Devices ONNX Runtime was built with, best first (``tensorrt``, ``cuda``, ``cpu``)."""
    import onnxruntime as ort

    have = set(ort.get_available_providers())
    return [d for d in (Device.TENSORRT, Device.CUDA, Device.CPU) if _PROVIDER[d] in have]


def choose_device(device: str | Device) -> Device:
    """Resolve ``auto`` and check that an explicit GPU device is available.

    Raises:
        ConfigError: not a device name, or ``cuda``/``tensorrt`` asked for but not in this
            ONNX Runtime build.
    """
    device = Device.parse(device)
    have = available_devices()
    if device is Device.AUTO:
        chosen = have[0]
        log.debug("device auto: chose %s (available: %s)", chosen, ", ".join(have))
        return chosen
    if device not in have:
        raise ConfigError(
            f"--device {device}: ONNX Runtime here has no {_PROVIDER[device]} (it has "
            f"{', '.join(have)}); install onnxruntime-gpu (`pip install .[gpu]`) on a machine "
            "with a GPU, or use --device cpu"
        )
    return device


def cpu_threads() -> int:
    """CPU cores this process may use (respects affinity masks and container limits)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class SessionOptions:
    """How to build a session.

    Attributes:
        device: ``cpu``, ``cuda`` or ``tensorrt`` (already resolved).
        threads: intra-op threads on the CPU (``None``: the cores this process may use,
            shared out between the streams).
        streams: batches run at once (CPU only; one session, called from that many threads).
        fp16: TensorRT builds fp16 engines (a fp16-exported model runs on any GPU device).
        batch_size: the largest batch (sizes TensorRT's optimisation profile).
        device_id: which GPU.
    """

    device: Device = Device.CPU
    threads: int | None = None
    fp16: bool = False
    batch_size: int = 64
    device_id: int = 0
    streams: int = 1

    def __post_init__(self) -> None:
        device = Device.parse(self.device)
        if device is Device.AUTO:
            raise ConfigError("SessionOptions.device must be resolved (choose_device), not auto")
        object.__setattr__(self, "device", device)

    @property
    def intra_op_threads(self) -> int:
        return self.threads or max(1, cpu_threads() // max(1, self.streams))


def _providers(opts: SessionOptions, input_shape: tuple[int, int, int]) -> list[Any]:
    c, h, w = input_shape
    cuda = ("CUDAExecutionProvider", {"device_id": opts.device_id,
                                      "cudnn_conv_algo_search": "EXHAUSTIVE",
                                      "do_copy_in_default_stream": True})
    if opts.device == "cpu":
        return ["CPUExecutionProvider"]
    if opts.device == "cuda":
        return [cuda, "CPUExecutionProvider"]
    cache = Path(os.environ.get("VISION_TRT_CACHE", Path.home() / ".cache" / "vision" / "trt"))
    cache.mkdir(parents=True, exist_ok=True)
    trt = ("TensorrtExecutionProvider", {
        "device_id": opts.device_id,
        "trt_fp16_enable": opts.fp16,
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": str(cache),
        "trt_timing_cache_enable": True,
        "trt_timing_cache_path": str(cache),
        # One optimisation profile covering every batch size the runner sends.
        "trt_profile_min_shapes": f"pixels:1x{c}x{h}x{w}",
        "trt_profile_opt_shapes": f"pixels:{opts.batch_size}x{c}x{h}x{w}",
        "trt_profile_max_shapes": f"pixels:{opts.batch_size}x{c}x{h}x{w}",
    })
    return [trt, cuda, "CPUExecutionProvider"]


def create_session(model: str | Path | bytes, opts: SessionOptions,
                   input_shape: tuple[int, int, int]) -> Any:
    """An `onnxruntime.InferenceSession` on the requested device, verified.

    Raises:
        ConfigError: the GPU provider asked for could not be initialised.
    """
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if opts.device == "cpu":
        so.intra_op_num_threads = opts.intra_op_threads
        so.inter_op_num_threads = 1
        # Spinning threads would steal the cores the decode workers need between batches.
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        # A memory pattern is planned on the first run of a shape and allocated as a fresh
        # block on the second: two slow runs per stream (page faults) and a third more peak
        # memory. Without it the arena's blocks are reused from the second run on (measured
        # on a d8 model, batch 64, one thread: runs 0.81, 0.74, 0.58 s -> 0.80, 0.58, 0.58 s;
        # peak RSS 819 -> 520 MB).
        so.enable_mem_pattern = False
    src = model if isinstance(model, bytes) else str(model)
    sess = ort.InferenceSession(src, sess_options=so, providers=_providers(opts, input_shape))
    got = sess.get_providers()
    wanted = _PROVIDER[Device(opts.device)]
    if wanted not in got:
        raise ConfigError(
            f"--device {opts.device}: {wanted} failed to initialise (ONNX Runtime fell back to "
            f"{got}); check the GPU driver, CUDA and cuDNN versions, or use --device cpu"
        )
    log.debug("ONNX Runtime session on %s", got[0])
    return sess


class Classifier:
    """Runs batches of raw pixels through the model and returns logits as float32.

    Args:
        model: model path or bytes.
        opts: session options.
        input_shape: ``(C, H, W)``.
        input_dtype: ``float32`` or ``float16`` (fp16 models take half inputs).
    """

    def __init__(self, model: str | Path | bytes, opts: SessionOptions,
                 input_shape: tuple[int, int, int], input_dtype: str = "float32"):
        self.opts = opts
        self.input_shape = input_shape
        self.dtype = np.float16 if input_dtype == "float16" else np.float32
        self.session = create_session(model, opts, input_shape)
        self._gpu = _GpuBinding(self.session, opts, input_shape, self.dtype) \
            if opts.device != "cpu" else None

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """``N x C x H x W`` raw pixels -> ``N x K`` logits."""
        if batch.dtype != self.dtype:
            batch = batch.astype(self.dtype)
        if self._gpu is not None:
            return self._gpu.run(batch)
        out = self.session.run(["logits"], {"pixels": batch})[0]
        return np.asarray(out, dtype=np.float32)


class _GpuBinding:
    """IO binding with pinned host staging and device-resident input/output buffers.

    Uses torch (a project dependency, CUDA-enabled in the GPU image) as the allocator of
    pinned and device memory, as in ONNX Runtime's IO-binding documentation; without a
    CUDA torch it binds ONNX Runtime `OrtValue`s on the device instead (no pinned staging).
    Buffers are sized for the largest batch and reused.
    """

    def __init__(self, session: Any, opts: SessionOptions, input_shape: tuple[int, int, int],
                 dtype: Any):
        self.session = session
        self.opts = opts
        self.shape = input_shape
        self.dtype = dtype
        self.binding = session.io_binding()
        self.capacity = 0
        self.torch: Any = None
        try:
            import torch

            if torch.cuda.is_available():
                self.torch = torch
        except ImportError:  # pragma: no cover - torch is a project dependency
            pass
        self._alloc(opts.batch_size)

    def _alloc(self, n: int) -> None:
        c, h, w = self.shape
        self.capacity = n
        k = self.session.get_outputs()[0].shape[-1]
        if self.torch is not None:
            t = self.torch
            tdtype = t.float16 if self.dtype == np.float16 else t.float32
            dev = t.device("cuda", self.opts.device_id)
            self.host = t.empty((n, c, h, w), dtype=tdtype, pin_memory=True)
            self.dev_in = t.empty((n, c, h, w), dtype=tdtype, device=dev)
            self.dev_out = t.empty((n, int(k)), dtype=tdtype, device=dev)

    def run(self, batch: np.ndarray) -> np.ndarray:
        n = batch.shape[0]
        if n > self.capacity:
            self._alloc(n)
        c, h, w = self.shape
        b = self.binding
        b.clear_binding_inputs()
        b.clear_binding_outputs()
        if self.torch is not None:
            host = self.host[:n]
            host.numpy()[...] = batch
            dev_in = self.dev_in[:n]
            dev_in.copy_(host, non_blocking=True)
            dev_out = self.dev_out[:n]
            # ONNX Runtime runs on its own stream: make the copy visible before it starts.
            self.torch.cuda.current_stream(self.opts.device_id).synchronize()
            b.bind_input("pixels", "cuda", self.opts.device_id, self.dtype, [n, c, h, w],
                         dev_in.data_ptr())
            b.bind_output("logits", "cuda", self.opts.device_id, self.dtype,
                          list(dev_out.shape), dev_out.data_ptr())
            self.session.run_with_iobinding(b)
            return dev_out.float().cpu().numpy()
        import onnxruntime as ort

        val = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(batch), "cuda",
                                               self.opts.device_id)
        b.bind_ortvalue_input("pixels", val)
        b.bind_output("logits", "cuda", self.opts.device_id)
        self.session.run_with_iobinding(b)
        return np.asarray(b.copy_outputs_to_cpu()[0], dtype=np.float32)
