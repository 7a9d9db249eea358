"""Shared by the Python sides of `scripts/compare/run.sh` (decoder, encoder, train, metrics,
sft_encode): the command line, thread pinning, the timing loop and the JSON report. The tilpass
side (`benches/compare.rs`) follows the same protocol:

- `--threads N` pins every thread pool to N before the libraries are imported
  (OMP/MKL/OpenBLAS/Rayon environment variables, then `torch.set_num_threads(N)`);
- `--device cpu|cuda` (decoder and train only; default cpu) runs the models there; on CUDA the
  clock stops after `torch.cuda.synchronize()`, so queued kernels are timed;
- `--bench NAME:WARMUP:REPS` runs WARMUP untimed and REPS timed repetitions of NAME (without
  `--bench`: every benchmark of the script, 1 warm-up, 3 repetitions);
- only the work itself is timed: setup (model build, tokenization of inputs, copies of caches,
  fresh metric objects) happens before the clock starts, and the result is released after it
  stops;
- one JSON object on stdout: `side`, `group`, `threads`, `versions`, `benchmarks` (name, work,
  unit, warmup, reps, times_s, median_s) and `checks` (values both sides must agree on).
"""

import argparse
import importlib.metadata
import json
import os
import platform
import statistics
import time

THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "RAYON_NUM_THREADS")


def peak_rss_mb():
    """The process's peak resident memory so far in MiB (Linux's ru_maxrss is in KiB): since
    the process started, the model and inputs included (Python cannot reset it)."""
    try:
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    except (ImportError, OSError):
        return None


class Run:
    """One process's benchmarks: the parsed command line, the timings and the checks."""

    def __init__(self, group, known, devices=("cpu",)):
        p = argparse.ArgumentParser(description=f"{group}: the Python side of scripts/compare/run.sh")
        p.add_argument("--threads", type=int, help="pin every thread pool to this many threads")
        p.add_argument("--bench", action="append", default=[], metavar="NAME[:WARMUP:REPS]",
                       help=f"benchmarks to run, of {', '.join(known)} (default: all, 1 warm-up, 3 reps)")
        p.add_argument("--device", default="cpu", choices=devices,
                       help="where the models run (default cpu)")
        a = p.parse_args()
        self.group = group
        self.device = a.device
        self._sync = lambda: None
        self.threads = a.threads
        if a.threads is not None:
            if a.threads < 1:
                p.error("--threads must be at least 1")
            for var in THREAD_VARS:
                os.environ[var] = str(a.threads)
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        self.specs = []
        for s in a.bench or known:
            parts = s.split(":")
            if len(parts) == 1:
                name, warmup, reps = parts[0], 1, 3
            elif len(parts) == 3:
                name, warmup, reps = parts[0], int(parts[1]), int(parts[2])
            else:
                p.error(f"--bench {s}: expected NAME or NAME:WARMUP:REPS")
            if name not in known:
                p.error(f"unknown benchmark {name}; this script has {', '.join(known)}")
            if reps < 1:
                p.error(f"--bench {s}: REPS must be at least 1")
            self.specs.append((name, warmup, reps))
        self.benchmarks = []
        self.checks = {}
        self.extra = {}

    def names(self):
        """The names of the benchmarks to run, in order."""
        return [s[0] for s in self.specs]

    def pin_torch(self, torch):
        """Pins torch's intra-op threads (call right after importing torch); with `--device
        cuda`, checks that torch sees a GPU and makes `time` wait for its queued kernels."""
        if self.threads is not None:
            torch.set_num_threads(self.threads)
        if self.device != "cpu":
            if not torch.cuda.is_available():
                raise SystemExit(f"--device {self.device}: torch sees no CUDA device")
            self._sync = torch.cuda.synchronize
            self.extra["gpu"] = torch.cuda.get_device_name(0)

    def time(self, name, work, unit, run, setup=lambda: None):
        """Runs `run(setup())` WARMUP untimed and REPS timed times; only `run` is timed, not
        `setup` and not releasing the result. Returns the last result (for the checks)."""
        _, warmup, reps = next(s for s in self.specs if s[0] == name)
        times, last = [], None
        for i in range(warmup + reps):
            x = setup()
            start = time.perf_counter()
            out = run(x)
            self._sync()
            t = time.perf_counter() - start
            if i >= warmup:
                times.append(t)
            last = out
            del x, out
        self.benchmarks.append({"name": name, "work": work, "unit": unit, "warmup": warmup, "reps": reps,
                                "times_s": times, "median_s": statistics.median(times),
                                "peak_rss_mb": peak_rss_mb()})
        return last

    def emit(self, threads, distributions):
        """Prints the report; `threads` is the thread count the timed library really used."""
        print(json.dumps({
            "side": "python",
            "group": self.group,
            "threads": threads,
            "device": self.device,
            "python": f"Python {platform.python_version()}",
            "versions": {d: importlib.metadata.version(d) for d in distributions},
            "benchmarks": self.benchmarks,
            "checks": self.checks,
            **self.extra,
        }))
