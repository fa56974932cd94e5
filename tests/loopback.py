"""The tests' loopback HTTP server: a folder served on 127.0.0.1 (port 0) from a thread, with a request budget.

``folder_handler`` serves ``state["folder"]``, logs every request path in ``state["log"]`` and answers 503 once more
than ``max_requests`` arrived (a loop of retries would hit it); ``special(handler)`` may answer a request itself
(return True). ``serving`` starts the server, yields its URL and shuts it down. Used by tests/test_mirrors.py and
tests/test_checkpoints.py; nothing it serves leaves the machine.
"""
from __future__ import annotations

import contextlib
import http.server
import threading
from typing import Callable, Iterator


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def folder_handler(state: dict, max_requests: int,
                   special: Callable[[http.server.SimpleHTTPRequestHandler], bool] | None = None):
    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **k):
            super().__init__(*a, directory=str(state["folder"]), **k)

        def log_message(self, *args):
            pass

        def do_GET(self):
            state["log"].append(self.path)
            if len(state["log"]) > max_requests:
                self.send_error(503, "request budget of the test server spent")
                return
            if special is not None and special(self):
                return
            super().do_GET()

    return Handler


@contextlib.contextmanager
def serving(handler) -> Iterator[str]:
    """A :class:`Server` with ``handler`` on 127.0.0.1, in a daemon thread; yields ``http://127.0.0.1:<port>``."""
    srv = Server(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}"
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(5)
