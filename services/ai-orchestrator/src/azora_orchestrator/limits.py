"""Token buckets for requests/min and tokens/min, and the sliding-window retry budget.

Single event-loop thread, no awaits inside: check-then-take is atomic.
"""

from __future__ import annotations


class Bucket:
    """A token bucket refilled continuously: ``per_minute`` capacity, full after a minute."""

    __slots__ = ("capacity", "level", "rate", "stamp")

    def __init__(self, per_minute: float, now: float) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self.level = self.capacity
        self.stamp = now

    def resize(self, per_minute: float) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self.level = min(self.level, self.capacity)

    def refill(self, now: float) -> None:
        elapsed = now - self.stamp
        if elapsed > 0:
            self.level = min(self.capacity, self.level + elapsed * self.rate)
            self.stamp = now

    def wait_for(self, units: float) -> float:
        """Seconds until ``units`` (requests or tokens) fit (0 when they fit now). A request
        larger than the whole bucket is admitted once the bucket is full: slow, not impossible."""
        need = min(units, self.capacity)
        if self.level >= need:
            return 0.0
        return (need - self.level) / self.rate

    def take(self, units: float) -> None:
        # The level may go negative (a request bigger than what is left, admitted when the
        # bucket was full, or usage above the estimate): later requests then wait the debt out.
        self.level -= units

    def adjust(self, delta: float) -> None:
        self.level = min(self.capacity, self.level - delta)


class RetryBudget:
    """Retries allowed = max(minimum, percent of requests) over a sliding window of seconds."""

    __slots__ = ("requests", "retries", "seconds", "window")

    def __init__(self, window_s: int) -> None:
        self.window = window_s
        self.seconds = [-1] * window_s
        self.requests = [0] * window_s
        self.retries = [0] * window_s

    def _slot(self, now: float) -> int:
        sec = int(now)
        i = sec % self.window
        if self.seconds[i] != sec:
            self.seconds[i] = sec
            self.requests[i] = 0
            self.retries[i] = 0
        return i

    def record_request(self, now: float) -> None:
        self.requests[self._slot(now)] += 1

    def try_retry(self, now: float, percent: int, minimum: int) -> bool:
        i = self._slot(now)
        oldest = int(now) - self.window
        requests = retries = 0
        for j in range(self.window):
            if self.seconds[j] > oldest:
                requests += self.requests[j]
                retries += self.retries[j]
        if retries >= max(minimum, requests * percent / 100.0):
            return False
        self.retries[i] += 1
        return True
