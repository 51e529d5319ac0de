"""`python tools/convert_checkpoint.py …` (a checkout) = `pcseg-convert-checkpoint …` (installed): see pcseg.cli.convert_checkpoint."""
from pcseg.cli.convert_checkpoint import *  # noqa: F401,F403  (its functions too, for callers that load this file)

if __name__ == "__main__":
    main()  # noqa: F405
