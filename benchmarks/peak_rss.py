"""Run a command and print its peak RSS in KiB on the last line of standard error.

It runs from a small, fresh interpreter, because a child forked from a large
process (a benchmark with an in-process sandbox) is charged that process's
pages until it execs.
"""

import os
import sys

pid = os.posix_spawn(sys.argv[1], sys.argv[1:], os.environ)
_, status, usage = os.wait4(pid, 0)
print(f"peak-rss-kib {usage.ru_maxrss}", file=sys.stderr)
sys.exit(os.waitstatus_to_exitcode(status))
