"""limit_heap_fragmentation: freed tensors of slowly growing size must not grow the RSS.

Runs in a fresh interpreter (the setting is process-wide) and measures the resident set from
/proc: the oracle is the kernel's page count, not the code under test.
"""
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent("""
    import os, torch
    from pcseg.utils.memory import limit_heap_fragmentation
    def rss_mb():
        return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    assert limit_heap_fragmentation()
    big = torch.empty(30 << 18)
    del big                              # a freed 30 MB block raises glibc's dynamic threshold by default
    base, pinned = rss_mb(), []
    for i in range(200):
        step = torch.ones((8 << 18) + 1000 * i)   # ~8 MB, a little larger each time, then freed
        if i % 2 == 0:
            pinned.append(torch.ones(1000))       # small long-lived allocations between them
        del step
    print(rss_mb() - base)
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_freed_tensors_of_growing_size_do_not_grow_the_heap():
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True)
    growth_mb = float(out.stdout.strip())
    assert growth_mb < 64, f"RSS grew by {growth_mb:.0f} MB over 200 freed ~8 MB tensors"  # ~790 MB by default
