"""The ``archiver`` command and ``python -m archiver``: a stop signal is handled before
anything else loads, so Ctrl-C even while the CLI loads exits 130 (SIGTERM 143) without a
traceback; :mod:`archiver.stops` takes over once loaded."""

import gc
import os
import signal
import sys


def _stop_while_loading(signum: int, _frame: object) -> None:
    os._exit(128 + signum)  # nothing has started: nothing to finish


def main() -> None:
    for signum in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(signum) is not signal.SIG_IGN:
            signal.signal(signum, _stop_while_loading)
    from archiver import stops

    with stops.handling():
        from archiver.cli import cli

        try:
            cli(prog_name="archiver")
        finally:
            # The process ends here. The interpreter's last collection would walk every
            # object left (0.1 s after a backfill, benchmarks/backfill.py --waits), and
            # none needs it once the archive's connections are closed (the logs are
            # flushed by logging's own exit handler).
            engines = sys.modules.get("archiver.store.engines")
            if engines is not None:
                engines.close_all()
            gc.freeze()


if __name__ == "__main__":
    main()
