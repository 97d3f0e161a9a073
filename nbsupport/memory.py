"""Measure the peak resident memory (RSS) of this process while a block of code runs."""

import os
import threading
import time


def current_rss():
    """Resident memory of this process in bytes (Linux; 0 where /proc is missing)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


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
