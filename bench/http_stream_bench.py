#!/usr/bin/env python3
"""Closed-loop load on dartserve's HTTP JSON API, for comparing its streams with gRPC's
(dartserve-loadgen): CONCURRENCY streams of POST /v1/images:generate in flight for DURATION
seconds, each a class request as dartserve-loadgen's default mix sends (class 0-9, the server's
default preview cadence: every step), read line by line to the end. Prints images/s, calls/s and
call latency percentiles.

    bench/http_stream_bench.py --server 127.0.0.1:8080 --concurrency 16 --duration 30
"""
import argparse
import http.client
import threading
import time


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", default="127.0.0.1:8080", help="host:port of --http_port")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--duration", type=float, default=30, help="seconds in which calls start")
    parser.add_argument("--warmup", type=int, default=4, help="calls before measuring")
    parser.add_argument("--body", default='{"classId": %d, "seed": "%d"}',
                        help="request body; %%d gets the class, then the seed")
    args = parser.parse_args()
    host, port = args.server.rsplit(":", 1)
    lock = threading.Lock()
    latencies, counts = [], {"images": 0, "previews": 0, "lines": 0, "errors": 0}
    sequence = iter(range(10**9))

    def call(measure):
        with lock:
            n = next(sequence)
        conn = http.client.HTTPConnection(host, int(port), timeout=120)
        start = time.monotonic()
        conn.request("POST", "/v1/images:generate", body=args.body % (n % 10, n),
                     headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        images = previews = lines = 0
        ok = response.status == 200
        for line in response:  # one event per line, as the server flushes it
            lines += 1
            if line.startswith(b'{"result"'):
                images += 1
            elif b'"previewPng":""' not in line and line.startswith(b'{"progress"'):
                previews += 1
            elif line.startswith(b'{"error"'):
                ok = False
        conn.close()
        if measure:
            with lock:
                latencies.append(time.monotonic() - start)
                counts["images"] += images
                counts["previews"] += previews
                counts["lines"] += lines
                counts["errors"] += 0 if ok else 1

    for _ in range(args.warmup):
        call(False)
    deadline = time.monotonic() + args.duration
    start = time.monotonic()

    def worker():
        while time.monotonic() < deadline:
            call(True)

    threads = [threading.Thread(target=worker) for _ in range(args.concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - start
    latencies.sort()

    def pct(p):
        return latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))] if latencies else 0

    print(f"HTTP {args.server}: {len(latencies)} calls in {elapsed:.1f} s "
          f"(concurrency {args.concurrency}), {counts['errors']} failed")
    print(f"  images/s {counts['images'] / elapsed:.2f}  calls/s {len(latencies) / elapsed:.2f}  "
          f"previews/image {counts['previews'] / max(1, counts['images']):.2f}")
    print(f"  latency p50 {pct(50):.3f} s  p90 {pct(90):.3f} s  p99 {pct(99):.3f} s")


if __name__ == "__main__":
    main()
