"""Rise/fall hysteresis over a stream of probe results. Pure: no clock, no I/O."""

from __future__ import annotations


class Hysteresis:
    """Rise/fall over a stream of probe results; pure (no clock, no I/O).

    Undecided (None) at first; healthy after ``rise`` consecutive successes, unhealthy after
    ``fall`` consecutive failures, whichever comes first. ``observe`` says whether the verdict
    changed, which is exactly when the monitor emits.
    """

    __slots__ = ("_bad", "_good", "_verdict", "fall", "rise")

    def __init__(self, rise: int, fall: int, verdict: bool | None = None) -> None:
        self.rise = rise
        self.fall = fall
        self._verdict = verdict
        self._good = 0
        self._bad = 0

    @property
    def verdict(self) -> bool | None:
        return self._verdict

    @property
    def settling(self) -> bool:
        """No verdict yet, or the last result disagrees with it (a change may be coming)."""
        if self._verdict is None:
            return True
        return self._bad > 0 if self._verdict else self._good > 0

    @property
    def streak(self) -> int:
        """How many consecutive results agree with the last one."""
        return self._good or self._bad

    def observe(self, ok: bool) -> bool:
        """Feed one probe result; True when the verdict changed."""
        if ok:
            self._good, self._bad = self._good + 1, 0
            if self._verdict is not True and self._good >= self.rise:
                self._verdict = True
                return True
        else:
            self._good, self._bad = 0, self._bad + 1
            if self._verdict is not False and self._bad >= self.fall:
                self._verdict = False
                return True
        return False
