"""`python tools/ovs.py …` (a checkout) = `pcseg-ovs …` (installed): see pcseg.cli.ovs."""
from pcseg.cli.ovs import *  # noqa: F401,F403  (its functions too, for callers that load this file)

if __name__ == "__main__":
    main()  # noqa: F405
