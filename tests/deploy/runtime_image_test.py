"""The runtime image's contents: deploy/docker/collect-libs.sh and a replica of the runtime stage.

collect-libs.sh chooses the shared libraries the image ships. These tests run it on the built
binaries, then assemble the runtime stage's tree the way the Dockerfile does (/opt/dartserve
with bin/, lib/ and weights/, the loader cache from ld.so.conf.d, the flags file where
Kubernetes mounts it) on top of nothing but glibc, the part the debian:12-slim base provides.
The server runs in that tree through chroot, as the image's non-root user, with the
Deployment's arguments; the image's HEALTHCHECK must report SERVING and SIGTERM must drain.
A library the script misses fails the start-up. The chroot part needs root (CI runs as root)
and is skipped otherwise.
"""

import os
import pathlib
import re
import shutil
import subprocess
import tempfile
import unittest

import deploy_testing as dt

COLLECT_LIBS = dt.DEPLOY_DIR / "docker" / "collect-libs.sh"
# collect-libs.sh's exclusions: glibc and the loader (the base image's), the NVIDIA driver.
BASE_IMAGE_LIBRARY = re.compile(
    r"^(ld-linux.*|libc|libm|libmvec|libpthread|libdl|librt|libresolv|libanl|libutil|"
    r"libBrokenLocale|libnss_[a-z0-9_]+|libcuda|libnvidia-[a-z0-9-]+)\.so(\..*)?$")
STARTUP_TIMEOUT_S = 180


def ldd(binary, env=None):
    """{soname: resolved path or None} and the loader's path, from `ldd binary`."""
    output = subprocess.run(["ldd", binary], capture_output=True, text=True, check=True,
                            env=env).stdout
    resolved, loader = {}, None
    for line in output.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[1] == "=>":
            resolved[parts[0]] = None if parts[2] == "not" else parts[2]
        elif parts and parts[0].startswith("/"):
            loader = parts[0]
    return resolved, loader


def collect(dest, binaries):
    return subprocess.run([str(COLLECT_LIBS), str(dest), *binaries], capture_output=True,
                          text=True)


class CollectLibsTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        # The tokenizer module too, as the Dockerfiles pass it (the server dlopen()s it).
        cls.binaries = [dt.binary("DARTSERVE_SERVER"), dt.binary("DARTSERVE_CLIENT"),
                        dt.binary("DARTSERVE_SENTENCEPIECE_MODULE")]
        cls.tmp = tempfile.TemporaryDirectory(prefix="dartserve-libs-test-")
        cls.lib = pathlib.Path(cls.tmp.name) / "lib"
        cls.result = collect(cls.lib, cls.binaries)

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def test_collects_plain_files(self):
        self.assertEqual(self.result.returncode, 0, self.result.stderr)
        files = list(self.lib.iterdir())
        for path in files:
            with self.subTest(library=path.name):
                self.assertFalse(path.is_symlink(), "a link would dangle in the image")
                self.assertTrue(path.is_file())
                self.assertGreater(path.stat().st_size, 0)
        names = {path.name for path in files}
        # The heavy dependencies are there, BLAS under the soname LibTorch asks for, and the
        # metrics endpoint's prometheus-cpp with the civetweb under it.
        for expected in ("libtorch_cpu.so", "libgrpc++.so", "libprotobuf.so", "libblas.so.3",
                         "libprometheus-cpp-pull.so", "libprometheus-cpp-core.so",
                         "libcivetweb.so", "libcivetweb-cpp.so", "libsentencepiece.so"):
            self.assertTrue(any(name.startswith(expected) for name in names), expected)
        self.assertFalse(any(BASE_IMAGE_LIBRARY.match(name) for name in names))

    def test_every_library_resolves_into_the_collected_set(self):
        env = dict(os.environ, LD_LIBRARY_PATH=str(self.lib))
        for binary in self.binaries:
            resolved, _ = ldd(binary, env)
            for name, path in resolved.items():
                if BASE_IMAGE_LIBRARY.match(name):
                    continue
                with self.subTest(binary=os.path.basename(binary), library=name):
                    self.assertEqual(path, str(self.lib / name))

    def test_fails_on_what_is_not_an_executable(self):
        with tempfile.TemporaryDirectory() as tmp:
            result = collect(pathlib.Path(tmp) / "lib", [str(dt.FLAGS_FILE)])
        self.assertNotEqual(result.returncode, 0)
        self.assertIn("is not an executable", result.stderr)


def mount_points_under(root):
    """Mount points at or below `root` in this process's mount namespace."""
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        points = [line.split()[4] for line in f]
    root = os.path.realpath(root)
    return [p for p in points if p == root or p.startswith(root + "/")]


def can_chroot():
    """Root with mount namespaces (not, e.g., an unprivileged container) and chroot."""
    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("chroot"):
        return False
    return subprocess.run(["unshare", "--mount", "true"], capture_output=True).returncode == 0


@unittest.skipUnless(can_chroot(), "needs root with mount namespaces, unshare and chroot")
class RuntimeTreeTest(unittest.TestCase):
    """The runtime stage replicated in a directory, run with chroot."""

    @classmethod
    def setUpClass(cls):
        cls.server_binary = dt.binary("DARTSERVE_SERVER")
        cls.client_binary = dt.binary("DARTSERVE_CLIENT")
        cls.module = dt.binary("DARTSERVE_SENTENCEPIECE_MODULE")
        cls.tmp = tempfile.mkdtemp(prefix="dartserve-runtime-test-")
        cls.root = pathlib.Path(cls.tmp) / "root"
        cls.server = None
        try:
            cls._assemble()
        except BaseException:
            cls._cleanup()
            raise

    @classmethod
    def _assemble(cls):
        root, opt = cls.root, cls.root / "opt" / "dartserve"
        # What the Dockerfile's build stage puts in /stage and the runtime stage copies to
        # /opt/dartserve.
        result = collect(opt / "lib", [cls.server_binary, cls.client_binary, cls.module])
        assert result.returncode == 0, result.stderr
        (opt / "bin").mkdir(parents=True)
        shutil.copy(cls.server_binary, opt / "bin" / "dartserve")
        shutil.copy(cls.client_binary, opt / "bin" / "dartserve-client")
        # Beside the server, where it looks first (text models' tokenizer).
        shutil.copy(cls.module, opt / "bin" / os.path.basename(cls.module))
        for _, model_dir in dt.model_specs(dt.parse_flagfile()):
            shutil.copytree(dt.SOURCE_DIR / "weights" / os.path.basename(model_dir),
                            root / model_dir.lstrip("/"))
        # The base image's part: glibc and the loader, from this (the same) Debian release.
        for binary in (cls.server_binary, cls.client_binary):
            resolved, loader = ldd(binary)
            paths = [p for n, p in resolved.items() if BASE_IMAGE_LIBRARY.match(n) and p]
            for path in paths + [loader]:
                target = root / path.lstrip("/")
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(path, target)
        # The runtime stage's loader configuration, then its cache (`ldconfig` in the image).
        (root / "etc" / "ld.so.conf.d").mkdir(parents=True)
        (root / "etc" / "ld.so.conf").write_text("include /etc/ld.so.conf.d/*.conf\n")
        (root / "etc" / "ld.so.conf.d" / "dartserve.conf").write_text("/opt/dartserve/lib\n")
        subprocess.run(["ldconfig", "-r", str(root)], check=True)
        # The ConfigMap's file where the Deployment mounts it.
        flagfile = cls._deployment_flagfile()
        (root / flagfile.lstrip("/")).parent.mkdir(parents=True)
        shutil.copy(dt.FLAGS_FILE, root / flagfile.lstrip("/"))
        # What a container runtime provides: /proc (LibTorch reads cpuinfo) and a few devices.
        (root / "proc").mkdir()
        (root / "dev").mkdir()
        for device in ("null", "zero", "random", "urandom"):
            (root / "dev" / device).touch()
        for path in [root, *root.rglob("*")]:
            if path.is_dir():
                path.chmod(0o755)  # the non-root user must reach everything

    @staticmethod
    def _deployment_flagfile():
        container = dt.find_object("Deployment", "dartserve")["spec"]["template"]["spec"][
            "containers"][0]
        (arg,) = container["args"]
        return arg.removeprefix("--flagfile=")

    @classmethod
    def _cleanup(cls):
        if cls.server is not None:
            cls.server.kill()
        # The mounts live in the server's private mount namespace and end with it; never delete
        # through a mount that is still there (it would reach the real /dev or /proc).
        leftover = mount_points_under(cls.tmp)
        if leftover:
            raise AssertionError(f"mounts left under {cls.tmp}, not removing it: {leftover}")
        shutil.rmtree(cls.tmp)

    @classmethod
    def tearDownClass(cls):
        cls._cleanup()

    @classmethod
    def in_root(cls, argv):
        """argv run inside the tree as the image's USER, with /proc and devices mounted."""
        user = next(a for k, a in dt.dockerfile_instructions(dt.SOURCE_DIR / "Dockerfile")
                    if k == "USER")
        script = ('root=$1; shift; mount -t proc proc "$root/proc" && '
                  'for d in null zero random urandom; do '
                  'mount --bind "/dev/$d" "$root/dev/$d" || exit 1; done && '
                  f'exec chroot --userspec={user} "$root" "$@"')
        return ["unshare", "--mount", "--propagation", "private", "/bin/sh", "-c", script,
                "sh", str(cls.root), *argv]

    def test_server_runs_from_the_runtime_tree_only(self):
        instructions = dt.dockerfile_instructions(dt.SOURCE_DIR / "Dockerfile")
        entrypoint = dt.exec_form(next(a for k, a in instructions if k == "ENTRYPOINT"))
        # The Deployment's arguments; then loopback, free ports and one thread for the test.
        argv = entrypoint + [f"--flagfile={self._deployment_flagfile()}", "--host=127.0.0.1",
                             "--port=0", "--metrics_port=0", "--threads=1"]
        # A clean environment, as in the image: the loader must find the libraries by itself.
        type(self).server = dt.ServerProcess(self.in_root(argv),
                                             env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
        port, _ = self.server.wait_until_serving(STARTUP_TIMEOUT_S)

        health = dt.healthcheck_command(dt.SOURCE_DIR / "Dockerfile")
        health = [re.sub(r"^--server=127\.0\.0\.1:\d+$", f"--server=127.0.0.1:{port}", arg)
                  for arg in health]
        result = subprocess.run(self.in_root(health), capture_output=True, text=True,
                                timeout=120, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout.strip(), "SERVING")

        status = self.server.terminate(timeout=float(dt.parse_flagfile()["grace_seconds"]) + 60)
        self.assertEqual(status, 0, "".join(self.server.output))
        self.assertIn("dartserve: stopped", "".join(self.server.output))


if __name__ == "__main__":
    unittest.main(verbosity=2)
