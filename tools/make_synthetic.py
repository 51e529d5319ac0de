"""`python tools/make_synthetic.py …` (a checkout) = `pcseg-make-synthetic …` (installed): see pcseg.cli.make_synthetic."""
from pcseg.cli.make_synthetic import *  # noqa: F401,F403  (its functions too, for callers that load this file)

if __name__ == "__main__":
    main()  # noqa: F405
