"""`python -m oomfix` and the `oomfix` console script."""
from __future__ import annotations

import os
import signal
from types import FrameType


def _interrupted_at_start(signum: int, frame: FrameType | None) -> None:
    # Ctrl-C while the CLI is still being imported (click, yaml: a few hundred ms on a busy machine): nothing has
    # been read or written yet. Die of SIGINT as the CLI does once it runs, without a traceback.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGINT)


def entry() -> None:
    previous = signal.signal(signal.SIGINT, _interrupted_at_start)
    from oomfix.cli import main

    signal.signal(signal.SIGINT, previous)  # from here on the CLI's own handling (oomfix/cli.py: _interrupted)
    main()


if __name__ == "__main__":
    entry()
