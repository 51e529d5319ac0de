"""`python tools/annotate.py …` (a checkout) = `pcseg-annotate …` (installed): see pcseg.cli.annotate."""
from pcseg.cli.annotate import *  # noqa: F401,F403  (its functions too, for callers that load this file)

if __name__ == "__main__":
    main()  # noqa: F405
