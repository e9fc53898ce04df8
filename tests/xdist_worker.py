"""The interpreter of a pytest-xdist worker (tests/conftest.py points ``--tx`` here).

A worker must be monkey-patched before it imports anything, as ``python -m gevent.monkey
--module pytest`` does for a run without xdist. Once patched, execnet's threads are
greenlets, so its pipe to the controller must be read cooperatively: a blocking read would
stop every greenlet of the worker until the controller writes.

Run as ``python -u xdist_worker.py -u -c CODE``: execnet appends ``-u -c CODE`` to the
interpreter it is given, and ``CODE`` reads the rest of its bootstrap from stdin.
"""

from gevent import monkey

monkey.patch_all()

import os  # noqa: E402
import sys  # noqa: E402

from gevent.fileobject import FileObjectPosix  # noqa: E402


def main() -> None:
    code = sys.argv[sys.argv.index("-c") + 1]
    sys.argv = ["-c"]
    sys.path[0] = ""  # as under ``python -c``: the working folder, not this file's
    native_fdopen = os.fdopen
    channel: list[object] = []

    def fdopen(fd, *args, **kwargs):
        """execnet's init_popen_io first opens its copies of stdin and stdout: the pipe
        to the controller. Only those two are made cooperative."""
        stream = FileObjectPosix(fd, *args, **kwargs)
        channel.append(stream)
        if len(channel) == 2:
            os.fdopen = native_fdopen
        return stream

    os.fdopen = fdopen
    exec(code, {"__name__": "__main__"})


if __name__ == "__main__":
    main()
