"""vseam.serve.launch: start a server process, wait for /health, report a dead or slow one with its log, always stop it."""

import sys

import httpx
import pytest

from vseam.serve.launch import ServerError, ServerTimeout, launch

#: a minimal HTTP server: /health answers 200 after `delay` seconds, /pid answers its process id
FAKE_SERVER = """
import http.server, os, sys, time
port, delay = int(sys.argv[1]), float(sys.argv[2])
t0 = time.time()
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        ready = time.time() - t0 >= delay
        code = 200 if (self.path == "/pid" or ready) else 503
        body = str(os.getpid()).encode() if self.path == "/pid" else b""
        self.send_response(code); self.end_headers(); self.wfile.write(body)
    def log_message(self, *a):
        pass
print("fake server starting", flush=True)
http.server.HTTPServer(("127.0.0.1", port), H).serve_forever()
"""


def test_launch_waits_for_health_then_stops_the_process(tmp_path):
    log = tmp_path / "server.log"
    seen = []
    cmd = [sys.executable, "-c", FAKE_SERVER, "{port}", "1.5"]
    with launch(cmd, log, timeout=30, waiting=seen.append, waiting_every=0.5) as (base, proc):
        assert httpx.get(f"{base}/health").status_code == 200
        assert int(httpx.get(f"{base}/pid").text) == proc.pid
        assert proc.poll() is None
    assert proc.poll() is not None  # stopped on leaving (SIGINT to its process group)
    assert seen and all(s >= 0.5 for s in seen)  # progress was reported while /health said 503
    assert "fake server starting" in log.read_text()


def test_launch_reports_a_process_that_dies_with_its_log_tail(tmp_path):
    cmd = [sys.executable, "-c", "print('bad flag --nope'); raise SystemExit(3)"]
    with pytest.raises(ServerError, match=r"(?s)exited with 3.*bad flag --nope"):
        with launch(cmd, tmp_path / "dead.log", timeout=30):
            pytest.fail("must not yield")


def test_launch_times_out_and_still_stops_the_process(tmp_path):
    cmd = [sys.executable, "-c", FAKE_SERVER, "{port}", "999"]
    with pytest.raises(ServerTimeout, match=r"(?s)not healthy after 2s.*fake server starting"):
        with launch(cmd, tmp_path / "slow.log", timeout=2, name="slow server"):
            pytest.fail("must not yield")
