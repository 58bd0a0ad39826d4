"""How the benchmarks (and the sharded-loss test) measure memory.

- `CpuPeakMemory`: peak resident-set growth of this process during a `with` block.
- `CudaPeakMemory`: peak allocated CUDA memory above what was allocated before the block.
- `LargestTensor`: the largest tensor any operation returned during the block (a dispatch
  mode: it sees every operation, including those inside distributed collectives), to show that
  a (T, V) logits tensor never existed.
"""

from __future__ import annotations

import os
import threading
import time

import torch
from torch.utils._python_dispatch import TorchDispatchMode


class CpuPeakMemory:
    """Peak RSS growth (bytes) of this process during a `with` block."""

    def __init__(self):
        self.mode = "VmHWM" if _can_reset_hwm() else "statm-sampling-1ms"
        self.page = os.sysconf("SC_PAGE_SIZE")

    def rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self.page

    def __enter__(self):
        self.peak = 0
        if self.mode == "VmHWM":
            _reset_hwm()
            self.before = self.rss()
        else:
            self.before = self.rss()
            self._stop = threading.Event()
            self._max = self.before
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self):
        while not self._stop.is_set():
            self._max = max(self._max, self.rss())
            time.sleep(0.001)

    def __exit__(self, *exc):
        if self.mode == "VmHWM":
            high = _read_hwm()
        else:
            self._stop.set()
            self._thread.join()
            high = max(self._max, self.rss())
        self.peak = max(0, high - self.before)


def _reset_hwm():
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _read_hwm() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def _can_reset_hwm() -> bool:
    try:
        _reset_hwm()
        _read_hwm()
        return True
    except OSError:
        return False


class CudaPeakMemory:
    """Peak allocated CUDA memory (bytes) above what was allocated before the `with` block."""

    mode = "cuda-max_memory_allocated"

    def __enter__(self):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        self.before = torch.cuda.memory_allocated()
        return self

    def __exit__(self, *exc):
        torch.cuda.synchronize()
        self.peak = torch.cuda.max_memory_allocated() - self.before


class LargestTensor(TorchDispatchMode):
    """Records the largest number of elements of any tensor an operation returns."""

    def __init__(self):
        super().__init__()
        self.numel = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.numel = max(self.numel, t.numel())
        return out
