#!/usr/bin/env python3
"""How much the parity tests' measurements move between runs of the same binary.

The parity tests print what they measure (`measured ...` lines, shown with `--nocapture`).
On wgpu (lavapipe) results change from run to run, so a bound that one run clears with a small
margin can fail the next (stop 35's CI: a reward adapter at 1.01e-5 against a 1e-5 bound).
Run the same tests several times, keep each run's output, and give the files to this script:

    for i in 1 2 3; do
      TILPASS_TEST_DEVICE=wgpu-cpu cargo test --workspace --features tilpass-tests/wgpu \\
        --test all -- reward_parity seq2seq_train_parity --nocapture > run$i.log 2>&1
    done
    scripts/measured_spread.py run1.log run2.log run3.log

It prints, for every `measured` line whose numbers differ between the runs, the line with its
numbers replaced by `#` (as in the first run; lines are matched by their text up to the first
number) and, per number, the smallest and largest value over the runs. Compare
the largest with the test's bound. Lines that are equal in every run are counted, not printed.

Standard library only.
"""

import re
import sys

# A number standing on its own: not part of a name such as "T5.1.1" or "layers.0.mlp".
NUMBER = re.compile(r"(?<![\w.])[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?(?![\w.])")


def measured(path):
    """The `measured` lines of a log as {(key, n): (blanked line, numbers)}. The key is the
    line up to its first number, so a line whose trailing label changes between runs (the
    metric or tensor with the largest difference) stays one line; `n` counts repeats."""
    lines = {}
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.rstrip("\n")
            if not line.startswith("measured "):
                continue
            blanked = NUMBER.sub("#", line)
            key = blanked.split("#", 1)[0]
            n = 0
            while (key, n) in lines:
                n += 1
            lines[(key, n)] = (blanked, [float(x) for x in NUMBER.findall(line)])
    return lines


def main(paths):
    if len(paths) < 2:
        sys.exit("usage: measured_spread.py RUN1.log RUN2.log [...]")
    runs = [measured(p) for p in paths]
    keys = sorted(set().union(*runs))
    same = 0
    for key in keys:
        found = [r.get(key) for r in runs]
        missing = [p for p, v in zip(paths, found) if v is None]
        if missing:
            print(f"{key[0]}...\n    missing in: {', '.join(missing)}")
            continue
        text = found[0][0]
        values = [v for _, v in found]
        if any(len(v) != len(values[0]) for v in values):
            print(f"{text}\n    a different count of numbers between runs")
            continue
        if all(v == values[0] for v in values):
            same += 1
            continue
        spread = [
            f"{min(col):.6g}..{max(col):.6g}" if min(col) != max(col) else f"{col[0]:.6g}"
            for col in zip(*values)
        ]
        print(f"{text}\n    {' | '.join(spread)}")
    print(f"\n{len(keys)} measured lines over {len(paths)} runs; {same} equal in every run")


if __name__ == "__main__":
    main(sys.argv[1:])
