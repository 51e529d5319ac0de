"""limit_heap_fragmentation: freed tensors of slowly growing size must not grow the RSS.

Runs in a fresh interpreter (the setting is process-wide) and measures the resident set from
/proc: the oracle is the kernel's page count, not the code under test. The same workload without
the setting is the control that shows the test can fail.
"""
import subprocess
import sys
import textwrap

import pytest

from pcseg.utils.memory import mallopt

SCRIPT = textwrap.dedent("""
    import os, sys, torch
    from pcseg.utils.memory import limit_heap_fragmentation
    def rss_mb():
        return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    if sys.argv[1] == "fixed":
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


def rss_growth_mb(setting: str) -> float:
    out = subprocess.run([sys.executable, "-c", SCRIPT, setting], capture_output=True, text=True, check=True)
    return float(out.stdout.strip())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_freed_tensors_of_growing_size_do_not_grow_the_heap():
    growth_mb = rss_growth_mb("fixed")
    assert growth_mb < 64, f"RSS grew by {growth_mb:.0f} MB over 200 freed ~8 MB tensors"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_without_the_threshold_the_same_workload_grows_the_heap():
    # About 1 run in 8 glibc's default places the blocks so that the holes get reused (~18 MB growth
    # instead of ~800 MB, ASLR off or on), so the control takes the largest of up to three runs.
    growth_mb = 0.0
    for _ in range(3):
        growth_mb = max(growth_mb, rss_growth_mb("default"))
        if growth_mb > 256:
            break
    assert growth_mb > 256, f"control: glibc's default grew the RSS by only {growth_mb:.0f} MB (~800 MB measured)"


def test_mallopt_names_unknown_parameters():
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['mmap_treshold'\]; known: trim_threshold"):
        mallopt(mmap_treshold=1 << 20)
