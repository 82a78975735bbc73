"""Run one command and report its wall time and resource usage as JSON on file descriptor FD.

Started as ``python -S -I launch.py FD -- ARGV...`` so that this process stays small: on Linux a
child's peak RSS (ru_maxrss) starts from the high-water mark of the process that spawned it,
and the harness itself is far larger than the tools it measures. Only the standard library's
``os`` and ``time`` are used here.
"""

import os
import sys
import time


def main() -> int:
    report_fd = int(sys.argv[1])
    os.set_inheritable(report_fd, False)
    argv = sys.argv[sys.argv.index("--") + 1:]
    started = time.perf_counter()
    pid = os.posix_spawnp(argv[0], argv, os.environ)
    _, status, usage = os.wait4(pid, 0)
    wall = time.perf_counter() - started
    code = os.waitstatus_to_exitcode(status)
    os.write(report_fd, (f'{{"wall": {wall!r}, "utime": {usage.ru_utime!r}, '
                 f'"stime": {usage.ru_stime!r}, "maxrss_kib": {usage.ru_maxrss}, '
                 f'"code": {code}}}').encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
