"""Prometheus rules, their unit tests, the PrometheusRule copy, and the Grafana dashboard.

`promtool check config|rules` and `promtool test rules` run as their own CTest tests; these
checks cover what promtool does not: that every alert has a unit test that fires it and one
that does not, that the Kubernetes copy of the rules is current, and that the dashboard is
well formed and shows the signals operators need.
"""

import importlib.util
import unittest

import deploy_testing as dt


def load_render_module():
    spec = importlib.util.spec_from_file_location(
        "render_prometheusrule", dt.PROMETHEUS_DIR / "render_prometheusrule.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class PromqlNamesTest(unittest.TestCase):
    """The metric-name reader that the live-server test relies on."""

    def test_reads_names_and_skips_functions_labels_and_keywords(self):
        expr = ('histogram_quantile(0.99, sum by (model, le) (rate(a_seconds_bucket'
                '{status="ok",le=~"1|b_total"}[5m] offset 1h))) / on (model) group_left (x) '
                'b:rate5m > bool 1e3 unless c_total{model=~"$model"}[$__rate_interval:1m]')
        self.assertEqual(dt.promql_metric_names(expr), {"a_seconds_bucket", "b:rate5m", "c_total"})

    def test_reads_grafana_label_values(self):
        self.assertEqual(dt.promql_metric_names("label_values(g_running{x=\"y\"}, model)"),
                         {"g_running"})
        self.assertEqual(dt.promql_metric_names("label_values(model)"), set())

    def test_a_misspelt_metric_is_seen(self):
        self.assertIn("dartserve_request_duration_second_bucket", dt.promql_metric_names(
            "rate(dartserve_request_duration_second_bucket[5m])"))


class AlertRulesTest(unittest.TestCase):

    def setUp(self):
        self.alerts = [rule for _, rule in dt.rules() if "alert" in rule]
        self.unit_tests = dt.load_yaml_documents(
            dt.PROMETHEUS_DIR / "tests" / "alerts_test.yml")[0]

    def test_the_issue_alerts_exist(self):
        # p99 latency objective, queue wait, error ratio, KV saturation, target down.
        self.assertEqual({rule["alert"] for rule in self.alerts}, {
            "DartserveLatencyP99High", "DartserveQueueWaitHigh", "DartserveErrorRatioHigh",
            "DartserveKVCacheSaturated", "DartserveTargetDown"})

    def test_every_alert_has_severity_and_text(self):
        for rule in self.alerts:
            with self.subTest(alert=rule["alert"]):
                self.assertIn(rule["labels"]["severity"], {"warning", "critical"})
                self.assertTrue(rule["annotations"]["summary"])
                self.assertTrue(rule["annotations"]["description"])
                self.assertIn("for", rule, "an alert without `for` pages on one bad scrape")

    def test_every_alert_has_a_firing_and_a_quiet_unit_test(self):
        # promtool only runs the cases that exist; this makes a new alert without tests fail.
        self.assertCountEqual(self.unit_tests["rule_files"],
                              [f"../rules/{path.name}" for path in dt.rule_files()])
        firing, quiet = set(), set()
        for case in self.unit_tests["tests"]:
            for alert_test in case.get("alert_rule_test", []):
                (firing if alert_test["exp_alerts"] else quiet).add(alert_test["alertname"])
        for rule in self.alerts:
            with self.subTest(alert=rule["alert"]):
                self.assertIn(rule["alert"], firing)
                self.assertIn(rule["alert"], quiet)

    def test_recording_rules_follow_the_naming_convention(self):
        for name in dt.recorded_names():
            with self.subTest(record=name):
                self.assertRegex(name, r"^model:dartserve_[a-z0-9_]+:[a-z0-9_]+$")


class PrometheusRuleManifestTest(unittest.TestCase):

    def test_kubernetes_copy_matches_the_rule_files(self):
        expected = load_render_module().render()
        actual = (dt.K8S_BASE_DIR / "prometheusrule.yaml").read_text(encoding="utf-8")
        self.assertEqual(actual, expected,
                         "deploy/k8s/base/prometheusrule.yaml is stale: run "
                         "/usr/bin/python3 deploy/prometheus/render_prometheusrule.py")


class DashboardTest(unittest.TestCase):

    def setUp(self):
        self.dashboard = dt.dashboard()
        self.panels = dt.dashboard_panels()

    def test_panels_are_well_formed(self):
        ids = [panel["id"] for panel in self.panels]
        self.assertEqual(len(ids), len(set(ids)), "panel ids must be unique")
        for panel in self.panels:
            with self.subTest(panel=panel["title"]):
                grid = panel["gridPos"]
                self.assertLessEqual(grid["x"] + grid["w"], 24)
                if panel["type"] == "row":
                    continue
                self.assertTrue(panel["targets"])
                self.assertEqual(panel["datasource"]["uid"], "${datasource}")
                for target in panel["targets"]:
                    self.assertTrue(target["expr"].strip())
                    self.assertEqual(target["datasource"]["uid"], "${datasource}")

    def test_variables(self):
        variables = {v["name"]: v for v in self.dashboard["templating"]["list"]}
        self.assertEqual(variables["datasource"]["query"], "prometheus")
        # Every panel filters by the model variable (but the compute lanes', which are shared by
        # the models), and the variable is filled from a series that exists from start-up (not
        # one that appears with the first call).
        self.assertIn("dartserve_requests_running", variables["model"]["definition"])
        for where, expr in dt.dashboard_expressions():
            if ("dartserve_" in expr and not where.startswith("variable")
                    and "dartserve_compute_lane_" not in expr):
                with self.subTest(where=where):
                    self.assertIn('model=~"$model"', expr)

    def test_shows_the_signals_operators_need(self):
        used = set()
        for _, expr in dt.dashboard_expressions():
            used |= dt.promql_metric_names(expr)
        for name in [
                "dartserve_request_duration_seconds_bucket",  # latency percentiles
                "dartserve_requests_total",  # throughput and errors by code
                "dartserve_images_total",
                "dartserve_requests_waiting",  # queue
                "dartserve_queue_wait_seconds_bucket",
                "dartserve_step_batch_requests_sum",  # batch size
                "dartserve_time_to_first_preview_seconds_bucket",
                "dartserve_kv_cache_usage_ratio",
                "dartserve_compute_lane_busy_seconds_total",  # models queueing on a lane
        ]:
            with self.subTest(metric=name):
                self.assertIn(name, used)
        titles = [panel["title"] for panel in self.panels]
        self.assertIn("Errors by code", titles)
        errors = next(p for p in self.panels if p["title"] == "Errors by code")
        self.assertIn("by (status)", errors["targets"][0]["expr"])

    def test_provisioning_points_at_the_dashboard(self):
        provider = dt.load_yaml_documents(
            dt.GRAFANA_DIR / "provisioning" / "dashboards" / "dartserve.yaml")[0]["providers"][0]
        compose = dt.load_yaml_documents(dt.DEPLOY_DIR / "compose.yaml")[0]
        mounts = compose["services"]["grafana"]["volumes"]
        self.assertIn(f"./grafana/dashboards:{provider['options']['path']}:ro", mounts)
        self.assertIn("./grafana/provisioning:/etc/grafana/provisioning:ro", mounts)
        datasource = dt.load_yaml_documents(
            dt.GRAFANA_DIR / "provisioning" / "datasources" / "prometheus.yaml")[0]
        self.assertEqual(datasource["datasources"][0]["url"], "http://prometheus:9090")
        self.assertIn("9090:9090", compose["services"]["prometheus"]["ports"])


if __name__ == "__main__":
    unittest.main(verbosity=2)
