"""`python tools/visualize.py …` (a checkout) = `pcseg-visualize …` (installed): see pcseg.cli.visualize."""
from pcseg.cli.visualize import *  # noqa: F401,F403  (its functions too, for callers that load this file)

if __name__ == "__main__":
    main()  # noqa: F405
