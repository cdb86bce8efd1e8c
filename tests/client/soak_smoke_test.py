"""A one-minute soak of the real server: dartserve-loadgen --soak against dartserve.

Starts the built dartserve with the shipped models (weights/), runs `dartserve-loadgen --soak`
for 60 s (every call kind over every model: normal calls, client-side cancels, CancelGeneration
calls, short deadlines, abandoned streams), and checks that
- no call was lost (ended OK without its images), and the load generator exits 0;
- every kind ran and ended at least once the way it acts (OK, CANCELLED, CANCELLED with an OK
  CancelGeneration, DEADLINE_EXCEEDED, CANCELLED);
- the server's RSS was sampled from its /metrics throughout;
- afterwards the server holds nothing: no request running or waiting, no KV memory reserved.
docs/reliability.md ("Soak") has the 30-minute run this is the short form of.

CTest passes DARTSERVE_SOURCE_DIR, DARTSERVE_SERVER and DARTSERVE_LOADGEN.
"""

import json
import os
import pathlib
import re
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.request

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "deploy"))
import deploy_testing as dt  # noqa: E402  (after the path it is found on)

SOAK_SECONDS = 60
# Loading LibTorch and three models and warming them up, on a loaded 2-core machine.
STARTUP_TIMEOUT_S = 180
# The soak, its warm-up calls and the drain of its last calls (each bounded by a deadline).
LOADGEN_TIMEOUT_S = SOAK_SECONDS + 180
# How each kind ends when it acts before the server has finished (client/loadgen.h).
EXPECTED = {
    "normal": "OK",
    "client_cancel": "CANCELLED",
    "cancel_rpc": "CANCELLED",
    "short_deadline": "DEADLINE_EXCEEDED",
    "abandon": "CANCELLED",
}
MODELS = ("fmnist-dart-fm", "fmnist-dart", "shapes-dart")


def scrape(address):
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://{address}/metrics", timeout=30) as response:
        return response.read().decode("utf-8")


def samples(exposition, name):
    """{labels text: value} of every sample of `name`."""
    return {m.group(1): float(m.group(2))
            for m in re.finditer(rf"^{name}(\{{[^}}]*\}})? (\S+)$", exposition, re.MULTILINE)}


class SoakSmokeTest(unittest.TestCase):

    def test_one_minute_soak_loses_nothing(self):
        loadgen = dt.binary("DARTSERVE_LOADGEN")
        models = ",".join(f"{name}={dt.SOURCE_DIR / 'weights' / name}" for name in MODELS)
        server = dt.ServerProcess([
            dt.binary("DARTSERVE_SERVER"), "--host=127.0.0.1", "--port=0", "--metrics_port=0",
            "--threads=1", f"--model={models}"])
        try:
            port, metrics_port = server.wait_until_serving(STARTUP_TIMEOUT_S)
            metrics = f"127.0.0.1:{metrics_port}"
            with tempfile.TemporaryDirectory(prefix="dartserve-soak-") as tmp:
                report_path = pathlib.Path(tmp) / "soak.json"
                result = subprocess.run(
                    [loadgen, f"--server=127.0.0.1:{port}", f"--metrics={metrics}", "--soak",
                     f"--duration={SOAK_SECONDS}", "--concurrency=4",
                     "--mix=n:1|2,preview_every:0|1", "--short_timeout=0.1",
                     "--abandon_seconds=1", "--rss_every=5", f"--json={report_path}"],
                    capture_output=True, text=True, timeout=LOADGEN_TIMEOUT_S,
                    env=dict(os.environ, OMP_NUM_THREADS="1"), check=False)
                self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
                report = json.loads(report_path.read_text())
            self.check_report(report, result.stdout)
            self.check_server_is_empty(metrics)
        finally:
            server.kill()

    def check_report(self, report, text):
        self.assertEqual(report["lost"], 0, text)
        self.assertEqual(report["requests"], report["sent"], text)
        outcomes = report["outcomes"]
        self.assertEqual(set(outcomes), set(EXPECTED), text)
        for kind, status in EXPECTED.items():
            with self.subTest(kind=kind):
                self.assertGreater(outcomes[kind]["statuses"].get(status, 0), 0, text)
        self.assertGreater(outcomes["cancel_rpc"]["cancel_rpcs"].get("OK", 0), 0, text)
        for model in MODELS:
            self.assertIn(model, report["config"]["mix"])
        # A sample at the start, every 5 s and at the end; a loaded machine may miss a few.
        rss = report["server_rss"]
        self.assertGreaterEqual(len(rss), SOAK_SECONDS // 5 // 2, text)
        self.assertTrue(all(sample["bytes"] > 2**20 for sample in rss), rss)
        self.assertGreaterEqual(rss[-1]["t_s"], SOAK_SECONDS, rss)

    def check_server_is_empty(self, metrics):
        # Every call has ended, but a cancelled image leaves its scheduler at the next step
        # boundary: bounded polling of the other process until it has.
        deadline = time.monotonic() + 60
        while True:
            exposition = scrape(metrics)
            held = {name: {labels: value for labels, value in samples(exposition, name).items()
                           if value != 0}
                    for name in ("dartserve_requests_running", "dartserve_requests_waiting",
                                 "dartserve_kv_cache_bytes")}
            if not any(held.values()):
                break
            if time.monotonic() > deadline:
                self.fail(f"the server still holds requests after the soak: {held}")
            time.sleep(0.5)
        # Every model was exercised (its gauges exist), and it answered calls.
        for model in MODELS:
            self.assertIn(f'{{model="{model}"}}', samples(exposition, "dartserve_requests_running"))
            self.assertIn(f'dartserve_requests_total{{model="{model}",status="ok"}}', exposition)


if __name__ == "__main__":
    unittest.main()
