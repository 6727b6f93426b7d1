"""Progress reporting: tqdm bars with an ETA on a terminal, plain log lines elsewhere."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

log = logging.getLogger("fasttrap")


def _is_tty() -> bool:
    try:
        return sys.stderr.isatty()
    except Exception:  # noqa: BLE001
        return False


class Progress:
    """A counter with a total. A tqdm bar on a terminal; otherwise a log line every ``every`` s.

    Args:
        total: the count at completion.
        desc: what is being counted.
        unit: the unit shown (``step``, ``model-step``…).
        enabled: False silences it; None means "on a terminal only, log lines otherwise".
    """

    def __init__(self, total: int, desc: str, unit: str = "it", enabled: bool | None = True, every: float = 10.0):
        self.total, self.desc, self.unit = int(total), desc, unit
        self.n = 0
        self.t0 = time.perf_counter()
        self._last_log = self.t0
        self.every = every
        self.enabled = enabled is not False
        self.bar: Any = None
        self.postfix: dict[str, Any] = {}
        if self.enabled and _is_tty():
            from tqdm.auto import tqdm

            self.bar = tqdm(total=self.total, desc=desc, unit=unit, unit_scale=True, dynamic_ncols=True, leave=True)

    def update_to(self, n: int, **postfix: Any) -> None:
        n = min(int(n), self.total)
        self.postfix.update(postfix)
        if self.bar is not None:
            self.bar.update(n - self.n)
            if postfix:
                self.bar.set_postfix(postfix, refresh=False)
        elif self.enabled:
            now = time.perf_counter()
            if now - self._last_log >= self.every and n > self.n:
                rate = n / max(now - self.t0, 1e-9)
                # an ETA from the first few percent (start-up, the first block's set-up) would mislead
                eta = (f"ETA {(self.total - n) / rate:,.0f} s" if rate > 0 and n >= 0.02 * self.total
                       else "ETA –")
                extra = " ".join(f"{k}={v}" for k, v in self.postfix.items())
                r = f"{rate:,.0f}" if rate >= 10 else f"{rate:.2g}"
                print(f"[fasttrap] {self.desc}: {n}/{self.total} {self.unit}s, {r} {self.unit}s/s, "
                      f"{eta} {extra}".rstrip(), file=sys.stderr, flush=True)
                self._last_log = now
        self.n = n

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.enabled:
            dt = time.perf_counter() - self.t0
            print(f"[fasttrap] {self.desc}: done, {self.n} {self.unit}s in {dt:,.1f} s", file=sys.stderr, flush=True)

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
