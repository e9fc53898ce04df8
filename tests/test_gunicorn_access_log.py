"""Under gunicorn the access log is gunicorn's: a line per request with
``--access-logfile``, none without it (and then no per-request cost building one)."""

from __future__ import annotations

import pytest

from .conftest import free_port
from .runmodes.process import ServerProcess, gunicorn, http_get


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "options, logged",
    [
        (("--access-logfile", "-"), True),
        ((), False),
    ],
)
def test_access_log_follows_gunicorns_setting(options, logged):
    port = free_port()
    with ServerProcess(gunicorn(port, "-w", "1", *options), port) as server:
        server.wait_listening()
        server.wait_until(lambda: http_get(port, "/hello/")[0] == 200, what="an answer")
        assert http_get(port, "/hello/?mark=1")[0] == 200
        line = '"GET /hello/?mark=1 HTTP/1.1" 200'
        if logged:
            server.wait_output(line, timeout=10)
        assert server.stop() == 0
        assert (line in server.output) is logged
