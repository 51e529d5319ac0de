"""`python tools/make_budget.py …` (a checkout) = `pcseg-make-budget …` (installed): see pcseg.cli.make_budget."""
from pcseg.cli.make_budget import *  # noqa: F401,F403  (its functions too, for callers that load this file)

if __name__ == "__main__":
    main()  # noqa: F405
