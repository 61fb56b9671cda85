"""The ``archiver`` command and ``python -m archiver``: a stop signal is handled before
anything else loads, so Ctrl-C even while the CLI loads exits 130 (SIGTERM 143) without a
traceback; :mod:`archiver.stops` takes over once loaded."""

import os
import signal


def _stop_while_loading(signum: int, _frame: object) -> None:
    os._exit(128 + signum)  # nothing has started: nothing to finish


def main() -> None:
    for signum in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(signum) is not signal.SIG_IGN:
            signal.signal(signum, _stop_while_loading)
    from archiver import stops

    with stops.handling():
        from archiver.cli import cli

        cli(prog_name="archiver")


if __name__ == "__main__":
    main()
