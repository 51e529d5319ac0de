"""`python tools/demo.py …` (a checkout) = `pcseg-demo …` (installed): see pcseg.cli.demo."""
from pcseg.cli.demo import *  # noqa: F401,F403  (its functions too, for callers that load this file)

if __name__ == "__main__":
    main()  # noqa: F405
