"""Measure the peak resident memory (RSS) of this process while a block of code runs; choose where a model fits."""

import threading
import time

import psutil
import torch


def current_rss():
    """Resident memory of this process in bytes (Linux, macOS and Windows)."""
    return psutil.Process().memory_info().rss


class PeakRSS:
    """`with PeakRSS() as m: ...` then `m.peak` (bytes above the RSS at entry), sampled every 2 ms."""

    def __enter__(self):
        self.start = current_rss()
        self.peak_rss = self.start
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._done.is_set():
            self.peak_rss = max(self.peak_rss, current_rss())
            time.sleep(0.002)

    def __exit__(self, *exc):
        self._done.set()
        self._thread.join()
        self.peak_rss = max(self.peak_rss, current_rss())
        self.peak = self.peak_rss - self.start
        return False


def device_for(model, device, free_bytes=None):
    """`device` if it is a GPU with room for the model's weights (90% of its free memory), else the CPU."""
    if device.type != "cuda":
        return torch.device("cpu")
    free_bytes = torch.cuda.mem_get_info(device)[0] if free_bytes is None else free_bytes
    need = sum(p.nbytes for p in model.parameters())
    if need > 0.9 * free_bytes:
        print(f"the weights ({need / 2**30:.1f} GiB) do not fit in the GPU's {free_bytes / 2**30:.1f} GiB of free "
              "memory: the model runs on the CPU")
        return torch.device("cpu")
    return device
