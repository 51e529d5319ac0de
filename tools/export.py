"""`python tools/export.py …` (a checkout) = `pcseg-export …` (installed): see pcseg.cli.export."""
from pcseg.cli.export import *  # noqa: F401,F403  (its functions too, for callers that load this file)

if __name__ == "__main__":
    main()  # noqa: F405
