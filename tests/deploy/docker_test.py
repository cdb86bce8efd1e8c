"""The container recipes (Dockerfile, Dockerfile.cuda, .dockerignore) and deploy/compose.yaml.

Images cannot be built in CI (no registry to pull base images from), so these checks read the
recipes: both build the way CI does, ship only the runtime stage's files, run as a non-root
user, expose the server's ports, and health-check it with a command that
live_server_test.py runs against a real server.
"""

import fnmatch
import re
import unittest

import deploy_testing as dt

RUNTIME_ROOT = "/opt/dartserve"


def stages(path):
    """{stage name: [(KEYWORD, arguments)]}, in order; FROM lines open a stage."""
    out = {}
    current = None
    for keyword, arguments in dt.dockerfile_instructions(path):
        if keyword == "FROM":
            match = re.fullmatch(r"(\S+)\s+AS\s+(\S+)", arguments, re.IGNORECASE)
            assert match, f"{path}: every stage is named: FROM {arguments}"
            current = match.group(2)
            out[current] = [(keyword, match.group(1))]
        elif current is not None:
            out[current].append((keyword, arguments))
    return out


def install_deps_packages():
    text = (dt.SOURCE_DIR / "scripts" / "install-deps.sh").read_text(encoding="utf-8")
    block = re.search(r"^PACKAGES=\((.*?)^\)", text, re.MULTILINE | re.DOTALL).group(1)
    words = []
    for line in block.splitlines():
        words.extend(line.split("#")[0].split())
    return set(words)


def dockerignored(path, patterns):
    """Whether .dockerignore's `patterns` leave `path` (relative, no leading /) out."""
    ignored = False
    parts = path.split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    for pattern in patterns:
        negated = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        if any(fnmatch.fnmatchcase(prefix, pattern) or
               fnmatch.fnmatchcase(prefix, pattern.replace("**/", "*/")) for prefix in prefixes):
            ignored = not negated
    return ignored


class DockerfileTest(unittest.TestCase):
    FILES = ("Dockerfile", "Dockerfile.cuda")

    def setUp(self):
        self.flags = dt.parse_flagfile()

    def test_two_stages_build_and_runtime(self):
        for name in self.FILES:
            with self.subTest(dockerfile=name):
                self.assertEqual(list(stages(dt.SOURCE_DIR / name)), ["build", "runtime"])

    def test_build_stage_builds_like_ci(self):
        for name in self.FILES:
            with self.subTest(dockerfile=name):
                runs = " ".join(a for k, a in stages(dt.SOURCE_DIR / name)["build"] if k == "RUN")
                self.assertIn("scripts/install-deps.sh", runs)
                self.assertIn("TARGET=dartserve scripts/build.sh", runs)
                self.assertIn("TARGET=dartserve-client scripts/build.sh", runs)
                self.assertIn("deploy/docker/collect-libs.sh /stage/lib build/server/dartserve "
                              "build/client/dartserve-client", runs)
        # The CPU image configures exactly as CI: no CMake options of its own.
        runs = [a for k, a in stages(dt.SOURCE_DIR / "Dockerfile")["build"] if k == "RUN"]
        self.assertIn("TARGET=dartserve scripts/build.sh && TARGET=dartserve-client "
                      "scripts/build.sh", runs)
        self.assertFalse(any(re.search(r"\s-D\w+=", run) for run in runs))

    def test_cuda_variant(self):
        build = stages(dt.SOURCE_DIR / "Dockerfile.cuda")["build"]
        runtime = stages(dt.SOURCE_DIR / "Dockerfile.cuda")["runtime"]
        self.assertRegex(build[0][1], r"^nvidia/cuda:\$\{CUDA_VERSION\}-cudnn-devel-ubuntu")
        self.assertRegex(runtime[0][1], r"^nvidia/cuda:\$\{CUDA_VERSION\}-runtime-ubuntu")
        self.assertIn(("COPY", "--from=libtorch . /opt/libtorch"), build)
        runs = " ".join(a for k, a in build if k == "RUN")
        self.assertIn("-DTorch_DIR=/opt/libtorch/share/cmake/Torch", runs)
        skipped = re.search(r'DARTSERVE_DEPS_SKIP="([^"]*)"', runs).group(1).split()
        self.assertIn("libtorch-dev", skipped)
        self.assertLessEqual(set(skipped), install_deps_packages(),
                             "skips a package install-deps.sh does not install")

    def test_cpu_build_stage_skips_only_what_the_build_does_not_use(self):
        runs = " ".join(a for k, a in stages(dt.SOURCE_DIR / "Dockerfile")["build"] if k == "RUN")
        skipped = set(re.search(r'DARTSERVE_DEPS_SKIP="([^"]*)"', runs).group(1).split())
        self.assertLessEqual(skipped, install_deps_packages(),
                             "skips a package install-deps.sh does not install")
        # What the configure step finds (CMakeLists.txt's find_package and pkg-config modules).
        needed = {"g++", "cmake", "ninja-build", "pkg-config", "libtorch-dev", "libopenblas0-openmp",
                  "libabsl-dev", "nlohmann-json3-dev", "libpng-dev", "libgrpc++-dev",
                  "protobuf-compiler-grpc", "libprotobuf-dev", "protobuf-compiler",
                  "prometheus-cpp-dev", "libcivetweb-dev", "libsentencepiece-dev",
                  "libgtest-dev", "libgmock-dev", "zlib1g-dev", "librsvg2-dev"}
        self.assertFalse(skipped & needed, "skips a package the build needs")
        self.assertIn("chromium", skipped)

    def test_runtime_stage_holds_only_the_staged_files(self):
        for name in self.FILES:
            with self.subTest(dockerfile=name):
                runtime = stages(dt.SOURCE_DIR / name)["runtime"]
                copies = [a for k, a in runtime if k in ("COPY", "ADD")]
                self.assertEqual(copies, [f"--from=build /stage/ {RUNTIME_ROOT}/"])
                build_runs = " ".join(
                    a for k, a in stages(dt.SOURCE_DIR / name)["build"] if k == "RUN")
                self.assertIn("install -D -m 0755 -t /stage/bin build/server/dartserve "
                              "build/client/dartserve-client", build_runs)
                # The tokenizer module is dlopen()ed from the server's folder, so ldd never sees
                # it: it is installed beside the server and its own libraries are collected.
                module = "build/model/libdartserve_sentencepiece.so"
                self.assertRegex(build_runs, r"install -D -m 0755 -t /stage/bin (build/\S+\s+)*"
                                 + re.escape(module))
                self.assertRegex(build_runs, r"collect-libs\.sh /stage/lib (build/\S+\s+)*"
                                 + re.escape(module))

    def test_runtime_user_ports_health_and_entrypoint(self):
        for name in self.FILES:
            with self.subTest(dockerfile=name):
                runtime = dict()
                for keyword, arguments in stages(dt.SOURCE_DIR / name)["runtime"]:
                    runtime.setdefault(keyword, []).append(arguments)
                user = runtime["USER"][-1]
                self.assertRegex(user, r"^[1-9][0-9]*:[1-9][0-9]*$", "numeric and not root")
                self.assertEqual(runtime["EXPOSE"], [f"{self.flags['port']} "
                                                     f"{self.flags['http_port']} "
                                                     f"{self.flags['metrics_port']}"])
                health = dt.healthcheck_command(dt.SOURCE_DIR / name)
                self.assertEqual(health[0], f"{RUNTIME_ROOT}/bin/dartserve-client")
                self.assertEqual(health[-1], "health")
                self.assertIn(f"--server=127.0.0.1:{self.flags['port']}", health)
                client_timeout = float(next(a for a in health if a.startswith("--timeout="))
                                       .split("=")[1])
                check_timeout = re.search(r"--timeout=(\d+)s", runtime["HEALTHCHECK"][0])
                self.assertLess(client_timeout, float(check_timeout.group(1)))
                self.assertEqual(dt.exec_form(runtime["ENTRYPOINT"][0]),
                                 [f"{RUNTIME_ROOT}/bin/dartserve"])
                command = dt.exec_form(runtime["CMD"][0])
                model = next(a for a in command if a.startswith("--model="))
                self.assertEqual(model, f"--model={self.flags['model']}")
                self.assertEqual(runtime["STOPSIGNAL"], ["SIGTERM"])

    def test_images_serve_the_servers_default_models(self):
        # The server's default (what scripts/run.sh serves) is the shipped set; the images and
        # Kubernetes name the same models, in the same order, under the image's weights folder.
        expected = [(name, f"{RUNTIME_ROOT}/{path}")
                    for name, path in dt.server_default_model_specs()]
        self.assertEqual(dt.model_specs(self.flags), expected)

    def test_shipped_weights_are_where_the_flags_point(self):
        for _, model_dir in dt.model_specs(self.flags):
            self.assertTrue(model_dir.startswith(f"{RUNTIME_ROOT}/weights/"))
            source = dt.SOURCE_DIR / "weights" / model_dir.rsplit("/", 1)[1]
            self.assertTrue((source / "config.json").is_file())
            self.assertTrue((source / "model.safetensors").is_file())
            for name in self.FILES:
                with self.subTest(dockerfile=name, model=source.name):
                    runs = " ".join(
                        a for k, a in stages(dt.SOURCE_DIR / name)["build"] if k == "RUN")
                    copied = re.search(r"cp -r ((?:weights/\S+\s+)+)/stage/weights/", runs)
                    self.assertIsNotNone(copied, runs)
                    self.assertIn(f"weights/{source.name}", copied.group(1).split())


class DockerignoreTest(unittest.TestCase):

    def setUp(self):
        lines = (dt.SOURCE_DIR / ".dockerignore").read_text(encoding="utf-8").splitlines()
        self.patterns = [line.strip() for line in lines
                         if line.strip() and not line.startswith("#")]

    def test_the_build_has_its_inputs(self):
        for path in ["CMakeLists.txt", "scripts/install-deps.sh", "scripts/build.sh",
                     "deploy/docker/collect-libs.sh", "model/CMakeLists.txt",
                     "server/server_main.cc", "tests/CMakeLists.txt",
                     "weights/fmnist-dart/model.safetensors", "proto/CMakeLists.txt"]:
            with self.subTest(path=path):
                self.assertTrue((dt.SOURCE_DIR / path).exists())
                self.assertFalse(dockerignored(path, self.patterns))

    def test_build_outputs_and_history_stay_out(self):
        for path in [".git/HEAD", "build/CMakeCache.txt", "build-deploy/server/dartserve",
                     "out/client/x.png", "runs/fmnist-dart/ema/model.safetensors",
                     "data/cache/emoji/images64/index.tsv",
                     "deploy/k8s/base/deployment.yaml"]:
            with self.subTest(path=path):
                self.assertTrue(dockerignored(path, self.patterns))


class ComposeTest(unittest.TestCase):

    def setUp(self):
        self.compose = dt.load_yaml_documents(dt.DEPLOY_DIR / "compose.yaml")[0]
        self.flags = dt.parse_flagfile()

    def test_server_uses_the_kubernetes_flags_file(self):
        server = self.compose["services"]["dartserve"]
        flagfile = server["command"][0].removeprefix("--flagfile=")
        self.assertIn(f"./{dt.FLAGS_FILE.relative_to(dt.DEPLOY_DIR)}:{flagfile}:ro", server["volumes"])
        self.assertEqual(server["build"], {"context": "..", "dockerfile": "Dockerfile"})
        self.assertEqual(sorted(server["ports"]),
                         sorted(f"{self.flags[p]}:{self.flags[p]}"
                                for p in ("port", "http_port", "metrics_port")))
        stop = int(server["stop_grace_period"].removesuffix("s"))
        self.assertGreater(stop, float(self.flags["grace_seconds"]))

    def test_prometheus_scrapes_the_server(self):
        prometheus = self.compose["services"]["prometheus"]
        self.assertIn("./prometheus:/etc/prometheus:ro", prometheus["volumes"])
        self.assertIn("--config.file=/etc/prometheus/prometheus.yml", prometheus["command"])
        config = dt.load_yaml_documents(dt.PROMETHEUS_DIR / "prometheus.yml")[0]
        job = next(j for j in config["scrape_configs"] if j["job_name"] == "dartserve")
        self.assertEqual(job["static_configs"][0]["targets"],
                         [f"dartserve:{self.flags['metrics_port']}"])
        self.assertEqual(config["rule_files"], ["rules/*.yml"])


if __name__ == "__main__":
    unittest.main(verbosity=2)
