"""Measure the peak resident memory (RSS) of this process while a block of code runs."""

import threading
import time

import psutil


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
