#!/usr/bin/env python3
"""The web page in a real browser: headless Chromium driven by Selenium (Debian's chromium,
chromium-driver and python3-selenium) against a dartserve serving the shipped class model
(fmnist-dart-fm) and text model (shapes-dart).

It generates two images of the class model and one of a text prompt and checks that every card's
preview changed at least twice before its result and that the final images have the model's size;
cancels a 16-image request and sees it marked cancelled; reports the page's first-preview latency
(from the page's own event timestamps); and saves a screenshot taken mid-generation.

    DARTSERVE_SERVER=build/server/dartserve tests/server/web_page_test.py [--screenshot docs/web.png]

Exit status 0 when every check passes; 77 (CTest's skip code) when Chromium or Selenium is missing.
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import unittest

try:
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait
except ImportError:  # reported as a skip below
    webdriver = None

SOURCE_DIR = os.environ.get(
    "DARTSERVE_SOURCE_DIR", os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
SERVER = os.environ.get("DARTSERVE_SERVER", os.path.join(SOURCE_DIR, "build", "server", "dartserve"))
CHROMEDRIVER = "/usr/bin/chromedriver"
CHROMIUM = "/usr/bin/chromium"
CLASS_MODEL, TEXT_MODEL = "fmnist-dart-fm", "shapes-dart"
TIMEOUT = 300  # seconds; every wait is bounded by it (two busy cores: generous)
SCREENSHOT = None  # set from --screenshot


class Server:
    """A dartserve on free ports, with the shipped class and text models, one torch thread."""

    def __init__(self):
        self.proc = subprocess.Popen(
            [SERVER, "--model",
             f"{CLASS_MODEL}=weights/{CLASS_MODEL},{TEXT_MODEL}=weights/{TEXT_MODEL}",
             "--host", "127.0.0.1", "--port", "0", "--http_port", "0", "--metrics_port", "-1",
             "--threads", "1", "--grace_seconds", "1"],
            cwd=SOURCE_DIR, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.log = []
        self.http_port = None
        self.serving = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()
        if not self.serving.wait(TIMEOUT) or self.http_port is None:
            self.stop()
            raise RuntimeError("dartserve did not start:\n" + "".join(self.log))

    def _read(self):
        for line in self.proc.stdout:
            self.log.append(line)
            match = re.search(r"HTTP on [0-9.]+:(\d+)", line)
            if match:
                self.http_port = int(match.group(1))
            if "serving" in line:
                self.serving.set()
        self.serving.set()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class WebPageTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = Server()
        options = Options()
        options.binary_location = CHROMIUM
        for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                    "--window-size=1280,960", "--force-device-scale-factor=1"):
            options.add_argument(arg)
        cls.profile = tempfile.mkdtemp(prefix="dartserve-chromium-")
        options.add_argument("--user-data-dir=" + cls.profile)
        cls.driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        cls.driver.set_script_timeout(TIMEOUT)
        # One page for all tests, so the gallery collects their images (as for a user).
        cls.driver.get(f"http://127.0.0.1:{cls.server.http_port}/")

    @classmethod
    def tearDownClass(cls):
        cls.driver.quit()
        cls.server.stop()
        shutil.rmtree(cls.profile, ignore_errors=True)

    def setUp(self):
        self.wait_for(lambda d: len(Select(d.find_element(By.ID, "model")).options) == 2,
                      "the model list")

    def wait_for(self, condition, what, timeout=TIMEOUT):
        return WebDriverWait(self.driver, timeout, poll_frequency=0.02).until(
            condition, message="waiting for " + what)

    def fill(self, model, count, seed, cls=None, prompt=None, cadence=1):
        d = self.driver
        Select(d.find_element(By.ID, "model")).select_by_value(model)
        if cls is not None:
            Select(d.find_element(By.ID, "class")).select_by_visible_text(cls)
        if prompt is not None:
            d.find_element(By.ID, "prompt").clear()
            d.find_element(By.ID, "prompt").send_keys(prompt)
        for field, value in (("count", count), ("seed", seed), ("cadence", cadence)):
            d.find_element(By.ID, field).clear()
            d.find_element(By.ID, field).send_keys(str(value))

    def run_state(self):
        return self.driver.find_element(By.ID, "run").get_attribute("data-state")

    def cards(self):
        return self.driver.find_elements(By.CSS_SELECTOR, "#cards .card")

    def generate_and_check(self, size, count, screenshot=None):
        d = self.driver
        d.find_element(By.ID, "generate").click()
        if screenshot:
            # Mid-generation: the first card has shown half its previews and is not finished.
            self.wait_for(lambda d: int(self.cards()[0].get_attribute("data-previews")) >= 4,
                          "four previews")
            d.save_screenshot(screenshot)
            print(f"screenshot: {screenshot}")
        self.wait_for(lambda d: self.run_state() in ("done", "failed", "cancelled"), "the result")
        self.assertEqual(self.run_state(), "done",
                         d.find_element(By.ID, "run-state").text)
        cards = self.cards()
        self.assertEqual(len(cards), count)
        for card in cards:
            self.assertEqual(card.get_attribute("data-state"), "done")
            self.assertGreaterEqual(int(card.get_attribute("data-previews-before-result")), 2,
                                    "the preview changed at least twice before the result")
            self.assertEqual(int(card.get_attribute("data-width")), size)
            self.assertEqual(int(card.get_attribute("data-height")), size)
            image = card.find_element(By.TAG_NAME, "img")
            self.wait_for(lambda d: d.execute_script("return arguments[0].complete", image),
                          "the image to load")
            self.assertEqual(d.execute_script("return arguments[0].naturalWidth", image), size)
            # Shown scaled up, crisply.
            self.assertGreater(image.size["width"], size)
            self.assertEqual(image.value_of_css_property("image-rendering"), "pixelated")
        stats = d.execute_script("return window.dartserve.runs[window.dartserve.runs.length - 1]")
        self.report(stats)
        return stats

    def report(self, stats):
        """The first preview's latency as the page measured it: from the server finishing the
        step (Progress.step_done_unix_seconds; server and browser share this host's clock) to the
        page painting the preview, and the page's own part of that (from the arrival of the
        chunk that carried the event, performance.now() timestamps)."""
        shown, received = stats.get("firstPreviewShownMs"), stats.get("firstPreviewReceivedMs")
        self.assertIsNotNone(shown, "the first preview was painted")
        after_step = stats.get("firstPreviewAfterStepMs")
        self.assertIsNotNone(after_step, "the first preview's event carried the step's time")
        self.assertEqual(stats.get("firstPreviewStep"), 1, "the first preview is the first step's")
        first = min(stats["results"], key=lambda r: r["receivedMs"])
        print(f"{stats['requestId']} ({stats['images']} images): accepted {stats['acceptedMs']:.1f} "
              f"ms, first preview received {received:.1f} ms, painted {shown:.1f} ms "
              f"({shown - received:.1f} ms on the page, {after_step:.1f} ms after the server's "
              f"step), first result {first['receivedMs']:.1f} ms")
        # A clock read on two sides of one host: small negative values are rounding.
        self.assertGreater(after_step, -5, "painted after the step it shows")
        # The 100 ms target is a measurement on a quiet machine (docs/performance.md); a loaded
        # test runner can take longer, so the test only catches previews held back for seconds
        # (for example until the result), not slow scheduling.
        self.assertLess(after_step, 3000, "the first preview is not held back")
        self.assertLessEqual(received, first["receivedMs"], "the first preview precedes the result")

    def test_class_model_two_images(self):
        self.fill(CLASS_MODEL, count=2, seed=7, cls="Sneaker")
        self.generate_and_check(28, 2)
        gallery = self.driver.find_elements(By.CSS_SELECTOR, "#gallery .shot a[download]")
        self.assertGreaterEqual(len(gallery), 2)
        self.assertTrue(gallery[0].get_attribute("href").startswith("data:image/png;base64,"))

    def test_text_prompt(self):
        self.fill(TEXT_MODEL, count=1, seed=3, prompt="a large red circle in the center")
        self.generate_and_check(32, 1)

    def test_screenshot_mid_generation(self):
        if not SCREENSHOT:
            self.skipTest("no --screenshot")
        self.fill(CLASS_MODEL, count=8, seed=11, cls="Ankle boot")
        self.generate_and_check(28, 8, screenshot=SCREENSHOT)

    def test_cancel_sixteen_images(self):
        d = self.driver
        self.fill(CLASS_MODEL, count=16, seed=1, cls="Bag")
        d.find_element(By.ID, "generate").click()
        self.wait_for(lambda d: any(int(c.get_attribute("data-previews")) >= 1 for c in self.cards()),
                      "the first preview")
        d.find_element(By.ID, "cancel").click()
        self.wait_for(lambda d: self.run_state() in ("done", "failed", "cancelled"), "the end")
        self.assertEqual(self.run_state(), "cancelled")
        self.assertEqual(d.find_element(By.ID, "run-state").text, "Cancelled")
        states = [c.get_attribute("data-state") for c in self.cards()]
        self.assertEqual(len(states), 16)
        self.assertIn("cancelled", states)
        self.assertTrue(all(s in ("done", "cancelled") for s in states), states)
        self.assertFalse(d.find_element(By.ID, "generate").get_property("disabled"))


def main():
    global SCREENSHOT
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--screenshot", help="save a screenshot taken mid-generation here")
    args, rest = parser.parse_known_args()
    SCREENSHOT = args.screenshot and os.path.abspath(args.screenshot)
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    if webdriver is None or missing:
        print("skipped: needs python3-selenium, chromium and chromium-driver", missing)
        sys.exit(77)
    unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)


if __name__ == "__main__":
    main()
