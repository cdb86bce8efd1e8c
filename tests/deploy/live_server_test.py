"""The deployment's configuration against a real server.

Starts the built dartserve with the shipped model and the Kubernetes/compose flags file
(deploy/k8s/base/dartserve.flags; only the listen addresses, ports and thread count are overridden),
then checks:
- the server accepts every flag in the file (an unknown flag or a bad value stops it);
- the image's HEALTHCHECK command reports SERVING through grpc.health.v1;
- every metric name used by the recording rules, alerts, Prometheus adapter rules and Grafana
  dashboard is exported by the server's /metrics (or is a recording rule's output, or
  Prometheus's own `up`), read from a live scrape after real calls;
- SIGTERM drains and exits 0, as the termination settings assume;
- a gRPC port that another process holds (or another dartserve, unless both pass --reuse_port)
  stops the server with exit status 1 and one clear line, as a crash-looping pod would log it.
"""

import os
import pathlib
import socket
import subprocess
import tempfile
import unittest
import urllib.request

import deploy_testing as dt

# Loading LibTorch and the weights and one warm-up image: seconds on an idle machine; generous
# for a loaded 2-core CI machine.
STARTUP_TIMEOUT_S = 180
CALL_TIMEOUT_S = 120
# Names Prometheus itself attaches to every target.
PROMETHEUS_SYNTHETIC = {"up"}


def run(args):
    return subprocess.run(args, capture_output=True, text=True, timeout=CALL_TIMEOUT_S,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))


def scrape(port):
    # No proxy: the endpoint is on this machine.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://127.0.0.1:{port}/metrics", timeout=30) as response:
        return response.read().decode("utf-8")


class LiveServerTest(unittest.TestCase):
    """One server for the class; the tests run in name order and the last one stops it."""

    @classmethod
    def setUpClass(cls):
        cls.client = dt.binary("DARTSERVE_CLIENT")
        flags = dt.parse_flagfile()
        cls.flags = flags
        # Later flags override the file's: free ports on loopback, one torch thread, and the
        # models from the source tree instead of the image's /opt/dartserve/weights.
        models = ",".join(f"{name}={dt.SOURCE_DIR / 'weights' / pathlib.Path(path).name}"
                          for name, path in dt.model_specs(flags))
        cls.server = dt.ServerProcess([
            dt.binary("DARTSERVE_SERVER"), f"--flagfile={dt.FLAGS_FILE}", "--host=127.0.0.1",
            "--port=0", "--http_port=0", "--metrics_port=0", "--threads=1", f"--model={models}"])
        try:
            cls.port, cls.metrics_port = cls.server.wait_until_serving(STARTUP_TIMEOUT_S)
        except BaseException:
            cls.server.kill()
            raise
        cls.out_dir = tempfile.TemporaryDirectory(prefix="dartserve-deploy-test-")

    @classmethod
    def tearDownClass(cls):
        cls.server.kill()
        cls.out_dir.cleanup()

    def generate(self, *extra):
        return run([self.client, f"--server=127.0.0.1:{self.port}", "--timeout=60", "generate",
                    f"--out={self.out_dir.name}", *extra])

    def test_1_healthcheck_command_reports_serving(self):
        for dockerfile in ("Dockerfile", "Dockerfile.cuda"):
            with self.subTest(dockerfile=dockerfile):
                command = dt.healthcheck_command(dt.SOURCE_DIR / dockerfile)
                # The image's client binary and port, swapped for the build's and this server's.
                server_flag = f"--server=127.0.0.1:{self.flags['port']}"
                self.assertIn(server_flag, command)
                command = [self.client] + [
                    f"--server=127.0.0.1:{self.port}" if arg == server_flag else arg
                    for arg in command[1:]
                ]
                result = run(command)
                self.assertEqual(result.returncode, 0, result.stderr)
                self.assertEqual(result.stdout.strip(), "SERVING")

    def test_2_every_referenced_metric_is_exported(self):
        # Calls first: request-level families have children only once a call has finished.
        ok = self.generate("--class=7", "--seed=1", "--n=1", "--preview_every=1")
        self.assertEqual(ok.returncode, 0, ok.stderr)
        self.assertTrue(list(pathlib.Path(self.out_dir.name).glob("*_img0.png")))
        rejected = self.generate("--class=99", "--seed=1")
        self.assertNotEqual(rejected.returncode, 0)
        self.assertIn("INVALID_ARGUMENT", rejected.stderr)

        exposition = scrape(self.metrics_port)
        self.assertRegex(exposition,
                         r'dartserve_requests_total\{model="[^"]+",status="ok"\} [1-9]')
        self.assertRegex(exposition, r'dartserve_requests_total\{[^}]*status="invalid_argument"')
        exported = dt.exposition_names(exposition)
        defined = exported | dt.recorded_names() | PROMETHEUS_SYNTHETIC
        uses = dt.referenced_metric_names()
        # Not vacuous: the rules, adapter and dashboard do use the server's own series.
        self.assertGreaterEqual(len(set(uses) & exported), 15)
        unknown = {name: where for name, where in uses.items() if name not in defined}
        self.assertEqual(unknown, {}, "metrics used but not exported by dartserve (exported: "
                         + ", ".join(sorted(exported)) + ")")
        # Every adapter rule's series is there to scale on.
        for rule in dt.adapter_rules():
            for name in dt.promql_metric_names(rule["seriesQuery"]):
                self.assertIn(name, exported)
                self.assertRegex(name, rule["name"]["matches"])

    def test_3_sigterm_drains_and_exits_zero(self):
        grace = float(self.flags["grace_seconds"])
        status = self.server.terminate(timeout=grace + 60)
        output = "".join(self.server.output)
        self.assertEqual(status, 0, output)
        self.assertIn(f"draining (grace {self.flags['grace_seconds']} s)", output)
        self.assertIn("dartserve: stopped", output)


class ListenErrorTest(unittest.TestCase):
    """The binary against a port it cannot have."""

    def server_args(self, port, *extra):
        flags = dt.parse_flagfile()
        name, path = dt.model_specs(flags)[0]
        model = f"{name}={dt.SOURCE_DIR / 'weights' / pathlib.Path(path).name}"
        return [dt.binary("DARTSERVE_SERVER"), f"--flagfile={dt.FLAGS_FILE}", "--host=127.0.0.1",
                f"--port={port}", "--http_port=-1", "--metrics_port=-1", "--threads=1",
                f"--model={model}", *extra]

    def test_busy_port_is_one_clear_line_and_exit_1(self):
        with socket.socket() as held:
            held.bind(("127.0.0.1", 0))
            held.listen(1)
            port = held.getsockname()[1]
            result = subprocess.run(self.server_args(port), capture_output=True, text=True,
                                    timeout=STARTUP_TIMEOUT_S,
                                    env=dict(os.environ, OMP_NUM_THREADS="1"))
        self.assertEqual(result.returncode, 1, result.stderr)
        self.assertEqual(result.stderr.strip().splitlines()[-1],
                         f"dartserve: cannot listen on 127.0.0.1:{port}: address in use")

    def test_second_server_on_a_port_needs_reuse_port_on_both(self):
        for reuse in ([], ["--reuse_port"]):
            with self.subTest(reuse=reuse):
                first = dt.ServerProcess(self.server_args(0, *reuse))
                try:
                    port = int(first.wait_for_line(r"gRPC on [0-9.]+:(\d+)",
                                                   STARTUP_TIMEOUT_S).group(1))
                    second = dt.ServerProcess(self.server_args(port, *reuse))
                    try:
                        if reuse:
                            second.wait_for_line(r"serving \(health SERVING\)", STARTUP_TIMEOUT_S)
                        else:
                            status = second.process.wait(timeout=STARTUP_TIMEOUT_S)
                            self.assertEqual(status, 1)
                            second.wait_for_line(
                                rf"^dartserve: cannot listen on 127\.0\.0\.1:{port}: "
                                r"address in use$", STARTUP_TIMEOUT_S)
                    finally:
                        second.kill()
                finally:
                    first.kill()


if __name__ == "__main__":
    unittest.main(verbosity=2)
