"""``torchrun`` as started by ``torchdr-sc embed``: it ends when the launcher ends.

``python -m torchdr_sc.atlas.torchrun ARGS`` is ``python -m torch.distributed.run ARGS``
after asking the kernel for SIGTERM when the launcher ends, even by SIGKILL (Linux
``PR_SET_PDEATHSIG``). On SIGTERM torchrun stops its workers, which themselves end when
torchrun ends (see :mod:`torchdr_sc.atlas.worker`): no process of a job outlives it.
"""

from __future__ import annotations

import os
import signal
import sys

from ._signals import LAUNCHER_PID, TORCHRUN_PID, die_with_parent


def main() -> None:
    """Run torchrun with ``sys.argv[1:]`` once tied to the launcher's lifetime."""
    die_with_parent(signal.SIGTERM, LAUNCHER_PID)
    os.environ[TORCHRUN_PID] = str(os.getpid())
    from torch.distributed.run import main as torchrun

    torchrun(sys.argv[1:])


if __name__ == "__main__":
    main()
