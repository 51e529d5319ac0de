"""`python tools/active_learn.py …` (a checkout) = `pcseg-active-learn …` (installed): see pcseg.cli.active_learn."""
from pcseg.cli.active_learn import *  # noqa: F401,F403  (its functions too, for callers that load this file)

if __name__ == "__main__":
    main()  # noqa: F405
