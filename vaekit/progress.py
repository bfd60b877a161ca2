"""A class's grading progress on the TA's terminal: one bar on a terminal, one line per submission in a log."""

from __future__ import annotations

import sys
import time


class Progress:
    """One bar over the batch on a terminal (done, errors, ETA); one short line per submission in a log."""

    def __init__(self, total: int, done: int, stream=sys.stderr):
        self.total, self.done, self.errors, self.stream = total, done, 0, stream
        self.bar = None
        if stream.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=done, unit="submission", file=stream, dynamic_ncols=True)
        self.started = time.monotonic()
        self.fresh = 0

    def update(self, name: str, failed: bool) -> None:
        """One more submission done: ``name``, and whether any of its tasks failed."""
        self.done += 1
        self.fresh += 1
        self.errors += failed
        if self.bar is not None:
            self.bar.set_postfix(errors=self.errors, refresh=False)
            self.bar.update(1)
            return
        rate = (time.monotonic() - self.started) / self.fresh
        eta = rate * (self.total - self.done)
        print(f"[{self.done}/{self.total}] {name}: {'error' if failed else 'graded'} ({self.errors} errors "
              f"so far; {rate:.1f} s per submission, about {eta / 60:.0f} min left)", file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
