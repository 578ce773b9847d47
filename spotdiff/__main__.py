"""The ``spotdiff`` command (also ``python -m spotdiff``).

Stage commands started by ``spotdiff run``'s ``dvc repro`` find ``SPOTDIFF_STAGE_HOST`` set and are handed
to the warm stage host (``spotdiff.stagehost``) before anything heavy is imported here: this process only
waits for the exit code. Everything else, and every stage without a host, runs ``spotdiff.cli.main``.
"""

from __future__ import annotations

import os
import sys

STAGE_COMMANDS = ("generate", "qa", "shard", "train", "evaluate", "publish")
"""What ``spotdiff run`` hands to its stage host when dvc starts them."""


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    from spotdiff import stagehost

    host = os.environ.get(stagehost.ENV)
    if host and argv[:1] and argv[0] in STAGE_COMMANDS and int(os.environ.get("WORLD_SIZE", "1")) == 1:
        rc = stagehost.forward(argv, host)
        if rc is not None:
            return rc
        print(f"spotdiff: no stage host answers at {host}; running `{argv[0]}` in this process", file=sys.stderr)
    from spotdiff.cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
