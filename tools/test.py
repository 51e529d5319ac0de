"""`python tools/test.py …` (a checkout) = `pcseg-test …` (installed): see pcseg.cli.test."""
from pcseg.cli.test import *  # noqa: F401,F403  (its functions too, for callers that load this file)

if __name__ == "__main__":
    main()  # noqa: F405
