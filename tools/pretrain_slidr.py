"""`python tools/pretrain_slidr.py …` (a checkout) = `pcseg-pretrain-slidr …` (installed): see pcseg.cli.pretrain_slidr."""
from pcseg.cli.pretrain_slidr import *  # noqa: F401,F403  (its functions too, for callers that load this file)

if __name__ == "__main__":
    main()  # noqa: F405
