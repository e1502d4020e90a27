"""One progress reporter for every long step: a tqdm bar on a terminal, plain lines in a log.

Pipeline jobs run with stdout/stderr redirected to a log file, where a tqdm bar with
`disable=None` turns itself off and a 4-day training run or a 70,000-file download logs nothing.
`Progress` draws a tqdm bar when its stream is a terminal; otherwise it writes one
self-contained line every `interval_s` seconds (30 by default) and a last one at `close`:

 train stya2k/full: 1200/400000 it (0.3%) · 3.21 it/s · elapsed 0:06:14 · ETA 1d 10:31:05 · a2k=0.12
 train stya2k/full: 400000/400000 it (100.0%) · 3.20 it/s · elapsed 1d 10:43:20 · done

Intermediate lines give the rate since the previous line (ETA from it); the last line gives the
average over the whole run and says `done`, or `stopped` when closed short of the total.
Everything goes to stderr (as tqdm does) unless another stream is given, and is flushed.

Environment:
    SPARSEGEN_PROGRESS           auto (default: bar on a terminal, lines otherwise), bar, lines
                                 or off (no progress at all; `write` messages still appear).
    SPARSEGEN_PROGRESS_INTERVAL  seconds between lines when `interval_s` is not given (30).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Literal, TextIO, cast

from tqdm import tqdm

Mode = Literal["bar", "lines", "off"]
MODES = ("auto", "bar", "lines", "off")
ENV_MODE = "SPARSEGEN_PROGRESS"
ENV_INTERVAL = "SPARSEGEN_PROGRESS_INTERVAL"
DEFAULT_INTERVAL_S = 30.0
_PREFIXES = ("", "k", "M", "G", "T", "P", "E")


def _isatty(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):  # no isatty, or a closed stream
        return False


def resolve_mode(stream: TextIO) -> Mode:
    """What a reporter on `stream` does: SPARSEGEN_PROGRESS, or bar on a TTY and lines else."""
    wanted = os.environ.get(ENV_MODE, "auto").strip().lower() or "auto"
    if wanted not in MODES:
        raise ValueError(f"{ENV_MODE}={wanted!r}: expected one of {', '.join(MODES)}")
    if wanted == "auto":
        return "bar" if _isatty(stream) else "lines"
    return cast(Mode, wanted)


def default_interval() -> float:
    """Seconds between progress lines: SPARSEGEN_PROGRESS_INTERVAL, else 30."""
    raw = os.environ.get(ENV_INTERVAL, "").strip()
    if not raw:
        return DEFAULT_INTERVAL_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if value < 0:
        raise ValueError(f"{ENV_INTERVAL}={raw!r}: expected a number of seconds >= 0")
    return value


def _number(x: float) -> str:
    """Three significant digits, without exponent: 0.123, 3.21, 45.6, 789, 12345."""
    return f"{x:.0f}" if x >= 100 else f"{x:.1f}" if x >= 10 else f"{x:.2f}"


def format_size(n: float, unit: str = "B") -> str:
    """`n` with an SI prefix (steps of 1000, as tqdm's unit_scale): 512 B, 1.20 GB, 89.1 GB."""
    if abs(n) < 1000:
        return f"{n:.0f} {unit}" if float(n).is_integer() else f"{_number(n)} {unit}"
    i = 0
    while abs(n) >= 1000 and i < len(_PREFIXES) - 1:
        n /= 1000
        i += 1
    return f"{_number(n)} {_PREFIXES[i]}{unit}"


def format_duration(seconds: float) -> str:
    """H:MM:SS, with a day count in front from 24 hours on: 0:06:14, 1d 10:31:05."""
    s = max(0, round(seconds))
    days, s = divmod(s, 86_400)
    hours, s = divmod(s, 3600)
    minutes, s = divmod(s, 60)
    clock = f"{hours}:{minutes:02d}:{s:02d}"
    return f"{days}d {clock}" if days else clock


def _value(v: object) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def write(message: str, stream: TextIO | None = None) -> None:
    """Print a message line (to stderr by default) without breaking a bar drawn there."""
    stream = stream if stream is not None else sys.stderr
    tqdm.write(message, file=stream)
    stream.flush()


class Progress:
    """Progress of `total` units (None: unknown) of work; use as a context manager.

    `unit_scale` shows counts and rates with SI prefixes (bytes: unit="B"). `initial` is where
    a resumed job starts. `disable` turns progress off (e.g. on all but the main process).
    `clock` is injectable so the line interval can be tested without sleeping. Update it from
    one thread (e.g. the one collecting a pool's results)."""

    def __init__(self, total: float | None, desc: str = "", *, unit: str = "it",
                 initial: int = 0, unit_scale: bool = False, interval_s: float | None = None,
                 stream: TextIO | None = None, disable: bool = False,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.total = total
        self.desc = desc
        self.unit = unit
        self.unit_scale = unit_scale
        self.n: float = initial
        self.stream: TextIO = stream if stream is not None else sys.stderr
        self.mode: Mode = "off" if disable else resolve_mode(self.stream)
        self.interval_s = default_interval() if interval_s is None else interval_s
        self.postfix: dict[str, str] = {}
        self._clock = clock
        self._start = self._last_t = clock()
        self._initial = self._last_n = initial
        self._closed = False
        self._bar = (tqdm(total=total, desc=desc, unit=unit, unit_scale=unit_scale,
                          initial=initial, file=self.stream, dynamic_ncols=True)
                     if self.mode == "bar" else None)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def update(self, n: float = 1) -> None:
        """Count `n` more units done; in lines mode, write a line once the interval is over."""
        self.n += n
        if self._bar is not None:
            self._bar.update(n)
        elif self.mode == "lines":
            now = self._clock()
            if now - self._last_t >= self.interval_s:
                rate = (self.n - self._last_n) / (now - self._last_t) if now > self._last_t \
                    else None
                self._emit(self._line(now, rate))
                self._last_t, self._last_n = now, self.n

    def set_postfix(self, values: Mapping[str, object]) -> None:
        """Latest values shown after the counts (e.g. losses), from the next update on; floats
        with 4 significant digits."""
        self.postfix = {k: _value(v) for k, v in values.items()}
        if self._bar is not None:
            self._bar.set_postfix(self.postfix, refresh=False)  # drawn at the next update

    def write(self, message: str) -> None:
        """A message line that does not break the bar (like tqdm.write)."""
        write(message, self.stream)

    def close(self) -> None:
        """Finish: close the bar, or write the last line (average rate, done or stopped)."""
        if self._closed:
            return
        self._closed = True
        if self._bar is not None:
            self._bar.close()
        elif self.mode == "lines":
            now = self._clock()
            rate = (self.n - self._initial) / (now - self._start) if now > self._start \
                else None
            self._emit(self._line(now, rate, final=True))

    def _line(self, now: float, rate: float | None, final: bool = False) -> str:
        """The self-contained progress line at clock time `now`, given a rate (units/s)."""
        count = self._count(self.n)
        if self.total is not None:
            count += f"/{self._count(self.total)}"
        parts = [count if self.unit_scale else f"{count} {self.unit}"]
        if self.total:
            parts[0] += f" ({100 * self.n / self.total:.1f}%)"
        parts.append(self._rate(rate))
        parts.append(f"elapsed {format_duration(now - self._start)}")
        if final:
            short = self.total is not None and self.n < self.total
            parts.append("stopped" if short else "done")
        elif self.total is not None:
            left = self.total - self.n
            parts.append(f"ETA {format_duration(left / rate)}" if rate else "ETA ?")
        if self.postfix:
            parts.append(" ".join(f"{k}={v}" for k, v in self.postfix.items()))
        text = " · ".join(parts)
        return f"{self.desc}: {text}" if self.desc else text

    def _count(self, n: float) -> str:
        if self.unit_scale:
            return format_size(n, self.unit)
        return str(int(n)) if float(n).is_integer() else f"{n:.4g}"

    def _rate(self, rate: float | None) -> str:
        if rate is None:
            return f"? {self.unit}/s"
        if self.unit_scale:
            return f"{format_size(rate, self.unit)}/s"
        if 0 < rate < 1:
            return f"{_number(1 / rate)} s/{self.unit}"
        return f"{_number(rate)} {self.unit}/s"

    def _emit(self, line: str) -> None:
        self.stream.write(line + "\n")
        self.stream.flush()
