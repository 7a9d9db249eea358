#!/usr/bin/env python3
"""The datasketch side of the near-duplicate benchmarks of scripts/compare/run.sh (the tilpass
side is `tilpass-compare minhash`, benches/compare.rs): 100,000 synthetic documents built at run
time from the shared Norwegian sentences (../shared/data/ud-norwegian/nob-dev.txt then
nno-dev.txt; document i joins the sentences mix(4 i + j) mod N for j < 4, mix the 32-bit
integer hash below, and every
tenth document is document i - 5 with one word replaced: planted near-duplicates).

- minhash_100k: MinHash (num_perm 128, seed 1, datasketch's default affine32 scheme) of every
  document over its word 5-shingles (lower-cased, split on white space, as
  tilpass_data::minhash), `update_batch` per document;
- lsh_100k: MinHashLSH(threshold 0.8, num_perm 128): insert every signature, then query every
  one (the signatures are made before the clock starts).

datasketch is single-threaded Python; the checks (a checksum of the hash values, candidate
counts) must equal tilpass's.

    ~/.cache/tilpass-refenv/bin/python scripts/compare/minhash.py [--bench minhash_100k:0:2]

datasketch is pinned in tests/fixtures/requirements.txt.
"""

import pathlib

from common import Run

run = Run("minhash", ["minhash_100k", "lsh_100k"])

from datasketch import MinHash, MinHashLSH  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[2]
DATA = ROOT / ".." / "shared" / "data" / "ud-norwegian"
N_DOCS = 100_000


def mix(x):
    """A 32-bit integer hash (xor-shift-multiply), the same on the tilpass side."""
    x = ((x ^ (x >> 16)) * 0x45D9F3B) % 2**32
    x = ((x ^ (x >> 16)) * 0x45D9F3B) % 2**32
    return x ^ (x >> 16)


def documents():
    pool = (DATA / "nob-dev.txt").read_text().splitlines() + (DATA / "nno-dev.txt").read_text().splitlines()
    n = len(pool)
    docs = []
    for i in range(N_DOCS):
        if i % 10 == 9:
            words = docs[i - 5].split(" ")
            words[i % len(words)] = "endret"
            docs.append(" ".join(words))
        else:
            docs.append(" ".join(pool[mix(4 * i + j) % n] for j in range(4)))
    return docs


def shingles(text, k=5):
    words = text.lower().split()
    if not words:
        return []
    if len(words) < k:
        return [" ".join(words)]
    return [" ".join(words[i:i + k]) for i in range(len(words) - k + 1)]


def signatures(docs):
    out = []
    for d in docs:
        m = MinHash(num_perm=128, seed=1)
        m.update_batch([s.encode("utf-8") for s in shingles(d)])
        out.append(m)
    return out


def lsh_query(ms):
    index = MinHashLSH(threshold=0.8, num_perm=128)
    for i, m in enumerate(ms):
        index.insert(i, m)
    return [index.query(m) for m in ms]


docs = documents()
cached = []
for name in run.names():
    if name == "minhash_100k":
        ms = run.time(name, len(docs), "docs", signatures, setup=lambda: docs)
        run.checks["hash_checksum"] = str(sum(int(v) for m in ms for v in m.hashvalues[:8]) % (2**61 - 1))
        cached = ms
    else:
        if not cached:
            cached = signatures(docs)
        cands = run.time(name, len(docs), "docs", lsh_query, setup=lambda: cached)
        run.checks["candidate_entries"] = sum(len(c) for c in cands)
        run.checks["docs_with_candidates"] = sum(len(c) > 1 for c in cands)
run.emit(1, ["datasketch", "numpy", "scipy"])
