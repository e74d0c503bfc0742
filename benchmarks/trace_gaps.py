"""Where a profiled step leaves the GPU idle: read a torch.profiler chrome trace (``bench_lora_gpu.py`` with
``BENCH_PROFILE=1 BENCH_TRACE=DIR``) and attribute every gap on the compute stream to what the host was doing.

For each gap the next kernel's launch (matched by correlation id) says whether the host launched it late (a
host-bound gap: the host work between the gap's start and the launch is named by the innermost labelled CPU ops
open at the launch) or on time (the stream waited on another stream, e.g. an offload copy). Summed per label.

    python benchmarks/trace_gaps.py trace_full_ours.json.gz [--top 25] [--min-us 5]
"""
from __future__ import annotations

import argparse
import bisect
import collections
import gzip
import json

GPU_CATS = {"kernel", "gpu_memcpy", "gpu_memset"}
HOST_CATS = {"cpu_op", "user_annotation", "python_function"}
SYNCS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize", "cudaMemcpy", "cudaStreamWaitEvent")


def load(path: str) -> list[dict]:
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt") as f:
        data = json.load(f)
    return [e for e in data.get("traceEvents", data) if e.get("ph") == "X" and "dur" in e]


def analyse(events: list[dict], min_us: float = 5.0) -> dict:
    gpu = [e for e in events if e.get("cat") in GPU_CATS]
    by_stream = collections.defaultdict(list)
    for e in gpu:
        by_stream[e["args"].get("stream")].append(e)
    busy = {s: sum(e["dur"] for e in es) for s, es in by_stream.items()}
    compute = max(busy, key=busy.get)
    kernels = sorted(by_stream[compute], key=lambda e: e["ts"])
    others = sorted((e for s, es in by_stream.items() if s != compute for e in es), key=lambda e: e["ts"])
    launches = {e["args"]["correlation"]: e for e in events
                if e.get("cat") in ("cuda_runtime", "cuda_driver") and "correlation" in e.get("args", {})}
    host = collections.defaultdict(list)  # tid -> labelled host ops, by start
    for e in events:
        if e.get("cat") in HOST_CATS:
            host[e["tid"]].append(e)
    starts = {}
    for tid, es in host.items():
        es.sort(key=lambda e: e["ts"])
        starts[tid] = [e["ts"] for e in es]
    syncs = sorted((e for e in events if e.get("cat") in ("cuda_runtime", "cuda_driver")
                    and e["name"].startswith(SYNCS) and e["dur"] > 20), key=lambda e: e["ts"])

    def stack_at(tid, ts: float) -> list[str]:
        es = host.get(tid, [])
        i = bisect.bisect_right(starts.get(tid, []), ts)
        open_ = [e for e in es[max(0, i - 4000):i] if e["ts"] + e["dur"] >= ts]
        return [e["name"] for e in sorted(open_, key=lambda e: (e["ts"], -e["dur"]))]

    other_starts = [e["ts"] for e in others]
    longest = max((e["dur"] for e in others), default=0.0)

    def other_busy(a: float, b: float) -> float:
        tot, i = 0.0, bisect.bisect_left(other_starts, a - longest)
        for e in others[i:]:
            if e["ts"] >= b:
                break
            tot += max(0.0, min(b, e["ts"] + e["dur"]) - max(a, e["ts"]))
        return tot

    def host_between(tid, a: float, b: float) -> list[str]:
        """The host ops that took the window [a, b] on the launching thread, longest overlap first."""
        es = host.get(tid, [])
        i = bisect.bisect_right(starts.get(tid, []), b)
        took = collections.Counter()
        for e in es[max(0, i - 4000):i]:
            over = min(b, e["ts"] + e["dur"]) - max(a, e["ts"])
            if over > 0:
                took[e["name"]] += over
        return [f"{n} {us:.0f}us" for n, us in took.most_common(6)]

    gaps = []
    for prev, nxt in zip(kernels, kernels[1:]):
        start, end = prev["ts"] + prev["dur"], nxt["ts"]
        if end - start < min_us:
            continue
        launch = launches.get(nxt["args"].get("correlation"))
        late = launch is not None and launch["ts"] + launch["dur"] > start
        stack = stack_at(launch["tid"], launch["ts"]) if launch else []
        sync = [s["name"] for s in syncs if start - 1 <= s["ts"] + s["dur"] <= end + 1 or s["ts"] <= start <= s["ts"] + s["dur"]]
        gaps.append({
            "us": end - start, "host_late": late, "other_streams_busy_us": other_busy(start, end),
            "before": prev["name"][:60], "next": nxt["name"][:60], "launch_stack": stack[-6:], "syncs": sync[:3],
            "host_between": host_between(launch["tid"], start, launch["ts"]) if late else [],
        })
    span = kernels[-1]["ts"] + kernels[-1]["dur"] - kernels[0]["ts"]
    by_label = collections.Counter()
    for g in gaps:
        labels = [s for s in g["launch_stack"] if "." in s and not s.startswith("aten::")] or g["launch_stack"][:1]
        key = ("host: " if g["host_late"] else "wait: ") + " > ".join(labels[-2:] or ["?"])
        by_label[key] += g["us"]
    return {
        "compute_stream": compute, "span_us": span, "busy_us": busy[compute],
        "idle_us": sum(g["us"] for g in gaps), "gaps": len(gaps),
        "host_late_us": sum(g["us"] for g in gaps if g["host_late"]),
        "by_label_us": dict(by_label.most_common()),
        "largest": sorted(gaps, key=lambda g: -g["us"]),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("trace")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--min-us", type=float, default=5.0)
    a = ap.parse_args()
    r = analyse(load(a.trace), a.min_us)
    print(f"{a.trace}: span {r['span_us'] / 1e3:.1f} ms, compute stream {r['compute_stream']} busy "
          f"{r['busy_us'] / 1e3:.1f} ms, idle {r['idle_us'] / 1e3:.1f} ms in {r['gaps']} gaps "
          f"(host late {r['host_late_us'] / 1e3:.1f} ms)")
    for k, v in list(r["by_label_us"].items())[:20]:
        print(f"  {v / 1e3:7.2f} ms  {k}")
    for g in r["largest"][:a.top]:
        print(f"  gap {g['us'] / 1e3:6.2f} ms {'host' if g['host_late'] else 'wait'} side-busy "
              f"{g['other_streams_busy_us'] / 1e3:.2f} | {g['before']} -> {g['next']} | "
              f"{' > '.join(g['launch_stack'])} | {g['syncs']}")
        if g["host_between"]:
            print(f"      host meanwhile: {', '.join(g['host_between'])}")


if __name__ == "__main__":
    main()
