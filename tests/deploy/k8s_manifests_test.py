"""The Kubernetes manifests in deploy/k8s/, checked field by field and rendered.

No Kubernetes schema validator is packaged in Debian 12, so this reads the manifests and checks
what a wrong edit would break in a cluster: labels that selectors must match, ports, probes,
resources against the server's flags, graceful termination against the server's drain grace,
the HPA's metrics against the adapter's rules, and the CUDA overlay. Where a kubectl with a
recent kustomize is installed, every kustomization is also rendered with `kubectl kustomize`
(what `kubectl apply -k` does first); elsewhere that part is skipped, and says so.
"""

import sys
import unittest

import deploy_testing as dt


def container(deployment):
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1, "one container per pod"
    return containers[0]


def matches(selector, labels):
    return all(labels.get(key) == value for key, value in selector.items())


class ManifestsTest(unittest.TestCase):

    def setUp(self):
        self.objects = dt.base_resources()
        self.deployment = dt.find_object("Deployment", "dartserve")
        self.pod_labels = self.deployment["spec"]["template"]["metadata"]["labels"]
        self.pod_spec = self.deployment["spec"]["template"]["spec"]
        self.container = container(self.deployment)
        self.flags = dt.parse_flagfile()
        self.ports = {p["name"]: p["containerPort"] for p in self.container["ports"]}

    def test_every_object_is_complete(self):
        kinds = set()
        for file_name, obj in self.objects:
            with self.subTest(file=file_name, kind=obj.get("kind")):
                self.assertTrue(obj.get("apiVersion"))
                self.assertTrue(obj["metadata"]["name"])
                self.assertEqual(obj["metadata"]["labels"]["app.kubernetes.io/name"], "dartserve")
                kinds.add(obj["kind"])
        self.assertTrue({"Deployment", "Service", "HorizontalPodAutoscaler",
                         "PodDisruptionBudget", "PodMonitor", "PrometheusRule"} <= kinds)

    def test_selectors_match_the_pods(self):
        self.assertTrue(matches(self.deployment["spec"]["selector"]["matchLabels"],
                                self.pod_labels))
        for _, obj in self.objects:
            selector = None
            if obj["kind"] == "Service":
                selector = obj["spec"]["selector"]
            elif obj["kind"] in ("PodDisruptionBudget", "PodMonitor"):
                selector = obj["spec"]["selector"]["matchLabels"]
            if selector is not None:
                with self.subTest(kind=obj["kind"], name=obj["metadata"]["name"]):
                    self.assertTrue(selector)
                    self.assertTrue(matches(selector, self.pod_labels))
        for constraint in self.pod_spec["topologySpreadConstraints"]:
            self.assertTrue(matches(constraint["labelSelector"]["matchLabels"], self.pod_labels))
            self.assertEqual(constraint["topologyKey"], "kubernetes.io/hostname")

    def test_ports_are_the_servers(self):
        self.assertEqual(self.ports, {"grpc": int(self.flags["port"]),
                                      "http": int(self.flags["http_port"]),
                                      "metrics": int(self.flags["metrics_port"])})
        self.assertEqual(self.ports, {"grpc": 50051, "http": 8080, "metrics": 9464})
        services = {o["metadata"]["name"]: o for _, o in self.objects if o["kind"] == "Service"}
        self.assertEqual(services["dartserve-headless"]["spec"]["clusterIP"], "None")
        self.assertNotIn("clusterIP", services["dartserve"]["spec"])
        for service in services.values():
            for port in service["spec"]["ports"]:
                with self.subTest(service=service["metadata"]["name"], port=port["name"]):
                    self.assertIn(port["targetPort"], self.ports)
                    self.assertEqual(port["port"], self.ports[port["targetPort"]])
            grpc = next(p for p in service["spec"]["ports"] if p["name"] == "grpc")
            self.assertEqual(grpc["appProtocol"], "kubernetes.io/h2c")
        monitor = dt.find_object("PodMonitor")
        for endpoint in monitor["spec"]["podMetricsEndpoints"]:
            self.assertEqual(endpoint["port"], "metrics")
            self.assertEqual(endpoint["path"], "/metrics")

    def test_probes_use_grpc_health(self):
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            with self.subTest(probe=probe):
                spec = self.container[probe]
                self.assertEqual(spec["grpc"]["port"], self.ports["grpc"])
                # The server registers health for the whole server (service ""), not by name.
                self.assertNotIn("service", spec["grpc"])
                self.assertLess(spec["timeoutSeconds"], spec["periodSeconds"])
        startup = self.container["startupProbe"]
        self.assertGreaterEqual(startup["periodSeconds"] * startup["failureThreshold"], 120,
                                "start-up loads LibTorch, the weights and a warm-up image")

    def test_termination_covers_the_drain(self):
        grace = float(self.flags["grace_seconds"])
        pre_stop = self.container["lifecycle"]["preStop"]["exec"]["command"]
        self.assertEqual(pre_stop[0], "sleep")
        pause = float(pre_stop[1])
        termination = self.pod_spec["terminationGracePeriodSeconds"]
        self.assertGreater(termination, pause + grace,
                           "the kubelet would SIGKILL calls the server is still draining")
        # A draining pod reports NOT_SERVING; liveness must not restart it meanwhile.
        liveness = self.container["livenessProbe"]
        self.assertGreater(liveness["periodSeconds"] * liveness["failureThreshold"],
                           pause + grace)
        # A rolling update adds a warmed-up pod before draining an old one.
        self.assertEqual(self.deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"],
                         0)

    def test_flags_come_from_the_configmap(self):
        generators = {g["name"]: g for g in dt.kustomization()["configMapGenerator"]}
        self.assertEqual(generators["dartserve-flags"]["files"], [dt.FLAGS_FILE.name])
        volumes = {v["name"]: v for v in self.pod_spec["volumes"]}
        mounts = {m["name"]: m for m in self.container["volumeMounts"]}
        flag_volume = next(name for name, v in volumes.items()
                           if v.get("configMap", {}).get("name") == "dartserve-flags")
        flagfile = f"{mounts[flag_volume]['mountPath']}/{dt.FLAGS_FILE.name}"
        self.assertEqual(self.container["args"], [f"--flagfile={flagfile}"])
        self.assertTrue(mounts[flag_volume]["readOnly"])
        # Every mount has a volume.
        self.assertLessEqual(set(mounts), set(volumes))

    def test_resources_fit_the_flags(self):
        resources = self.container["resources"]
        self.assertEqual(resources["requests"], resources["limits"], "Guaranteed QoS")
        cpus = dt.parse_quantity(resources["limits"]["cpu"])
        threads = int(self.flags["threads"])
        # One compute lane (one OpenMP pool of --threads) per replica: more OpenMP threads than
        # cores and libgomp sleeps between operators (docs/deploy.md, Resources).
        lanes = int(self.flags.get("replicas", 1))
        self.assertLessEqual(lanes * threads, cpus, "more torch threads than cores stalls every step")
        env = {e["name"]: e["value"] for e in self.container["env"]}
        self.assertEqual(int(env["OMP_NUM_THREADS"]), threads)
        # The KV budget (per model) plus LibTorch, the weights and the gRPC buffers (~1 GiB
        # headroom).
        memory = dt.parse_quantity(resources["limits"]["memory"])
        models = len(dt.model_specs(self.flags))
        self.assertGreaterEqual(memory, (models * int(self.flags["kv_budget_mb"]) + 1024) * 2**20)

    def test_runs_as_the_images_non_root_user(self):
        security = self.pod_spec["securityContext"]
        self.assertTrue(security["runAsNonRoot"])
        users = [args for keyword, args in dt.dockerfile_instructions(dt.SOURCE_DIR / "Dockerfile")
                 if keyword == "USER"]
        self.assertEqual(users, [f"{security['runAsUser']}:{security['runAsGroup']}"])
        self.assertNotEqual(security["runAsUser"], 0)
        container_security = self.container["securityContext"]
        self.assertFalse(container_security["allowPrivilegeEscalation"])
        self.assertTrue(container_security["readOnlyRootFilesystem"])
        self.assertEqual(container_security["capabilities"]["drop"], ["ALL"])

    def test_disruption_budget_leaves_replicas_serving(self):
        pdb = dt.find_object("PodDisruptionBudget")
        hpa = dt.find_object("HorizontalPodAutoscaler")
        self.assertEqual(pdb["spec"]["maxUnavailable"], 1)
        self.assertGreaterEqual(hpa["spec"]["minReplicas"], 2,
                                "with one replica, a disruption budget of 1 leaves none")

    def test_autoscaler_uses_the_adapters_metrics(self):
        hpa = dt.find_object("HorizontalPodAutoscaler")
        target = hpa["spec"]["scaleTargetRef"]
        self.assertEqual((target["kind"], target["name"]), ("Deployment", "dartserve"))
        self.assertLessEqual(hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"])
        served = {rule["name"]["as"]: rule for rule in dt.adapter_rules()}
        names = []
        for metric in hpa["spec"]["metrics"]:
            self.assertEqual(metric["type"], "Pods")
            name = metric["pods"]["metric"]["name"]
            names.append(name)
            with self.subTest(metric=name):
                self.assertIn(name, served)
                rule = served[name]
                # The adapter maps the PodMonitor's namespace and pod labels to objects.
                self.assertEqual(rule["resources"]["overrides"],
                                 {"namespace": {"resource": "namespace"},
                                  "pod": {"resource": "pod"}})
                self.assertIn("<<.Series>>{<<.LabelMatchers>>}", rule["metricsQuery"])
                self.assertIn("by (<<.GroupBy>>)", rule["metricsQuery"])
                self.assertEqual(metric["pods"]["target"]["type"], "AverageValue")
        self.assertEqual(names[0], "dartserve_queue_depth", "the queue is the primary signal")

    def test_cuda_overlay_asks_for_a_gpu(self):
        overlay_dir = dt.K8S_DIR / "overlays" / "cuda"
        overlay = dt.kustomization(overlay_dir)
        self.assertEqual(overlay["resources"], ["../../base"])
        image = self.container["image"].split(":")[0]
        self.assertEqual(overlay["images"], [{"name": image, "newTag": "cuda"}])
        patch = dt.load_yaml_documents(overlay_dir / overlay["patches"][0]["path"])[0]
        self.assertEqual((patch["kind"], patch["metadata"]["name"]), ("Deployment", "dartserve"))
        patched = patch["spec"]["template"]["spec"]["containers"][0]
        self.assertEqual(patched["name"], self.container["name"])
        for section in ("requests", "limits"):
            self.assertEqual(str(patched["resources"][section]["nvidia.com/gpu"]), "1")
        self.assertEqual(patched["resources"]["requests"], patched["resources"]["limits"])
        tolerations = patch["spec"]["template"]["spec"]["tolerations"]
        self.assertIn("nvidia.com/gpu", [t["key"] for t in tolerations])


class LayoutTest(unittest.TestCase):
    """base/ and overlays/<name>/ side by side: kustomize refuses a base whose folder contains one
    of its overlays ("cycle detected: candidate root ... contains visited root")."""

    def test_bases_and_overlays_are_side_by_side(self):
        dirs = dt.kustomization_dirs()
        self.assertIn(dt.K8S_BASE_DIR, dirs)
        for directory in dirs:
            with self.subTest(kustomization=str(directory.relative_to(dt.K8S_DIR))):
                relative = directory.relative_to(dt.K8S_DIR).parts
                self.assertTrue(relative == ("base",) or
                                (len(relative) == 2 and relative[0] == "overlays"))
                for other in dirs:
                    if other != directory:
                        self.assertNotIn(directory, other.parents,
                                         f"{other} lies inside the kustomization {directory}")

    def test_overlays_build_on_the_base(self):
        for directory in dt.kustomization_dirs():
            if directory == dt.K8S_BASE_DIR:
                continue
            with self.subTest(overlay=directory.name):
                self.assertIn("../../base", dt.kustomization(directory)["resources"])


class RenderTest(unittest.TestCase):
    """`kubectl kustomize` of every kustomization: it renders, and the result is what the
    field-by-field checks above assume (the generated ConfigMap is the one the pods mount, the
    overlay's patch lands)."""

    @classmethod
    def setUpClass(cls):
        cls.kubectl, why_not = dt.kubectl_for_kustomize()
        if cls.kubectl is None:
            print(f"k8s_manifests_test: RenderTest skipped: {why_not}", file=sys.stderr)
            raise unittest.SkipTest(why_not)

    def render(self, directory):
        objects = dt.kustomize_build(self.kubectl, directory)
        by_kind = {}
        for obj in objects:
            by_kind.setdefault(obj["kind"], []).append(obj)
        return by_kind

    def test_every_kustomization_renders(self):
        expected = {obj["kind"] for _, obj in dt.base_resources()} | {"ConfigMap"}
        for directory in dt.kustomization_dirs():
            with self.subTest(kustomization=str(directory.relative_to(dt.K8S_DIR))):
                by_kind = self.render(directory)
                self.assertEqual(set(by_kind), expected)
                deployment = by_kind["Deployment"][0]
                config_map = by_kind["ConfigMap"][0]
                # The generated name carries the content hash, and the pods mount that name.
                self.assertRegex(config_map["metadata"]["name"], r"^dartserve-flags-[a-z0-9]+$")
                mounted = [v["configMap"]["name"]
                           for v in deployment["spec"]["template"]["spec"]["volumes"]
                           if "configMap" in v]
                self.assertEqual(mounted, [config_map["metadata"]["name"]])
                self.assertEqual(config_map["data"][dt.FLAGS_FILE.name],
                                 dt.FLAGS_FILE.read_text(encoding="utf-8"))
                for kind, objects in by_kind.items():
                    for obj in objects:
                        self.assertEqual(
                            obj["metadata"]["labels"]["app.kubernetes.io/part-of"], "dartserve",
                            f"{kind} {obj['metadata']['name']}")

    def test_cuda_overlay_renders_a_gpu_deployment(self):
        base = self.render(dt.K8S_BASE_DIR)["Deployment"][0]
        cuda = self.render(dt.K8S_DIR / "overlays" / "cuda")["Deployment"][0]
        base_container = container(base)
        cuda_container = container(cuda)
        self.assertEqual(cuda_container["image"],
                         base_container["image"].split(":")[0] + ":cuda")
        for section in ("requests", "limits"):
            self.assertEqual(str(cuda_container["resources"][section]["nvidia.com/gpu"]), "1")
        self.assertIn("nvidia.com/gpu",
                      [t["key"] for t in cuda["spec"]["template"]["spec"]["tolerations"]])
        # The patch adds to the base; everything else (probes, args, ports) is the base's.
        for field in ("args", "ports", "startupProbe", "readinessProbe", "livenessProbe"):
            self.assertEqual(cuda_container[field], base_container[field], field)


if __name__ == "__main__":
    unittest.main(verbosity=2)
