"""`python tools/train.py …` (a checkout) = `pcseg-train …` (installed): see pcseg.cli.train."""
from pcseg.cli.train import *  # noqa: F401,F403  (its functions too, for callers that load this file)

if __name__ == "__main__":
    main()  # noqa: F405
