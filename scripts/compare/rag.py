#!/usr/bin/env python3
"""The Python side of the `rag` group of scripts/compare/run.sh (the tilpass side is
`tilpass-compare rag`, benches/compare_rag.rs; data, sizes and cache: rag_harness.py):

- bm25_small / bm25_big: bm25s (method "lucene", k1 1.2, b 0.75, numba backend when numba is
  installed) top-10 of the queries, query tokenisation included, `n_threads` = --threads;
- rank_bm25_small / rank_bm25_big: rank-bm25's BM25Okapi (k1 1.2, b 0.75; its own idf) on a
  query sample, single-threaded Python;
- bm25_index: bm25s tokenize + index of the first passages;
- hnsw_ef{16,32,64,128,256}: hnswlib (inner product, M 16, ef_construction 200: rag_harness)
  top-10 of the query vectors at each ef, `num_threads` = --threads; recall@10 against exact numpy search.

Tokenisation made as close to tilpass's analysis chain as bm25s allows: lowercase, runs of
letters/digits (Python's `[^\\W_]+`, tantivy's SimpleTokenizer: `char::is_alphanumeric`), the
Snowball Norwegian stop words (bm25s's list equals tantivy's, 172 words), Snowball Norwegian
stemmer (PyStemmer; tantivy: rust-stemmers). Not replicated: tantivy drops tokens of 40+ bytes.
Scores: bm25s uses exact document lengths, tilpass Lucene's 256 quantised ones (rankings may
differ where that matters). Both rankings are reported for the overlap (rag_harness.report).

    python scripts/compare/rag.py --prepare      # untimed, once (run.py does it)
    python scripts/compare/rag.py --threads 2 --bench bm25_small:1:3
"""

import json
import os
import pathlib
import resource
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import rag_harness as H  # noqa: E402

PAT = r"(?u)[^\W_]+"
K1, B = 1.2, 0.75
MODE = sys.argv[1] if len(sys.argv) > 1 and sys.argv[1] in ("--prepare", "--rss") else None

if MODE is None:
    from common import Run

    run = Run("rag", [p[1] for p in H.plan()])
    threads = run.threads or 1
    os.environ["NUMBA_NUM_THREADS"] = str(threads)
else:
    run, threads = None, 1

import bm25s  # noqa: E402
import numpy as np  # noqa: E402
import Stemmer  # noqa: E402
from bm25s.stopwords import STOPWORDS_NORWEGIAN  # noqa: E402

try:
    import numba  # noqa: E402,F401

    BACKEND = "numba"
except ImportError:
    BACKEND = "numpy"

CACHE = H.cache_dir()
STEMMER = Stemmer.Stemmer("norwegian")


def tokenize(texts, ids=True):
    return bm25s.tokenize(texts, lower=True, token_pattern=PAT, stopwords=STOPWORDS_NORWEGIAN,
                          stemmer=STEMMER, return_ids=ids, show_progress=False)


def corpus(n):
    sents = H.read_sentences()
    out = []
    with open(CACHE / "corpus.idx") as f:
        for line, _ in zip(f, range(n)):
            out.append(" ".join(sents[int(i)] for i in line.split()))
    if len(out) != n:
        sys.exit(f"rag: {CACHE / 'corpus.idx'} has {len(out)} passages, {n} wanted (stale cache?)")
    return out


def queries(n):
    return (CACHE / "queries.txt").read_text(encoding="utf-8").split("\n")[:n]


def new_bm25s():
    return bm25s.BM25(k1=K1, b=B, method="lucene", backend=BACKEND)


def bm25s_top(retriever, qs):
    docs, scores = retriever.retrieve(tokenize(qs, ids=False), k=H.K, n_threads=threads,
                                      show_progress=False)
    return [[int(d) for d, s in zip(dr, sr) if s > 0] for dr, sr in zip(docs, scores)]


def big_index_dir():
    return CACHE / "bm25s-big"


def dir_bytes(d):
    return sum(p.stat().st_size for p in pathlib.Path(d).rglob("*") if p.is_file())


def prepare():
    """The large bm25s index and rank-bm25 object, built once and cached (untimed)."""
    import pickle

    from rank_bm25 import BM25Okapi

    z = H.sizes()
    done = CACHE / "bm25s-big.done"
    texts = None
    if not done.exists():
        texts = corpus(z["big"])
        r = new_bm25s()
        r.index(tokenize(texts), show_progress=False)
        r.save(str(big_index_dir()))
        done.write_text("")
    done = CACHE / "rank-bm25-big.done"
    if not done.exists():
        texts = texts or corpus(z["big"])
        okapi = BM25Okapi(tokenize(texts, ids=False), k1=K1, b=B)
        with open(CACHE / "rank-bm25-big.pkl", "wb") as f:
            pickle.dump(okapi, f, protocol=pickle.HIGHEST_PROTOCOL)
        done.write_text("")


def rss():
    """Child process: loads the large bm25s index, runs the large query set, prints peak RSS."""
    z = H.sizes()
    r = bm25s.BM25.load(str(big_index_dir()))
    bm25s_top(r, queries(z["q_big"]))
    print(json.dumps({"peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))


def fnv1a(tokens):
    h = 0xCBF29CE484222325
    for b in "\x1f".join(tokens).encode():
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def main():
    z = H.sizes()
    names = run.names()
    small_texts = corpus(z["small"])
    qs = queries(max(z["q_small"], z["q_big"], z["q_hnsw"]))
    run.extra["rankings"], run.extra["recall"], run.extra["notes"] = {}, {}, []
    run.checks["passages_small"] = len(small_texts)
    run.checks["passages_big"] = z["big"]

    # Tokenisation agreement: a hash of each small-corpus passage's terms.
    toks = tokenize(small_texts, ids=False)
    run.extra["token_hashes"] = [fnv1a(t) for t in toks]
    run.extra["stats"] = {"small_corpus_terms": sum(map(len, toks)),
                          "small_corpus_vocabulary": len({w for t in toks for w in t})}

    small = None
    if any(n in names for n in ("bm25_small",)):
        small = new_bm25s()
        small.index(tokenize(small_texts), show_progress=False)
    for name in names:
        if name in ("bm25_small", "bm25_big"):
            r = small if name == "bm25_small" else bm25s.BM25.load(str(big_index_dir()))
            q = qs[:z["q_small"] if name == "bm25_small" else z["q_big"]]
            top = run.time(name, len(q), "queries", lambda _: bm25s_top(r, q))
            run.extra["rankings"][f"bm25s_{name.split('_')[1]}"] = top
            if name == "bm25_big":
                mem = {"passages": z["big"], "disk_bytes": dir_bytes(big_index_dir()), "queries": len(q),
                       "how": "bm25s.BM25.load without mmap, numba backend" if BACKEND == "numba"
                       else "bm25s.BM25.load without mmap"}
                start = time.time()
                import subprocess
                p = subprocess.run([sys.executable, __file__, "--rss"], capture_output=True, text=True,
                                   env=os.environ)
                if p.returncode != 0:
                    sys.exit(f"rag --rss failed:\n{p.stderr[-2000:]}")
                mem.update(json.loads(p.stdout.strip().splitlines()[-1]))
                run.extra["memory"] = mem
                run.extra["notes"].append(f"memory child ran {time.time() - start:.1f} s")
                del r
        elif name in ("rank_bm25_small", "rank_bm25_big"):
            from rank_bm25 import BM25Okapi

            if name == "rank_bm25_small":
                okapi = BM25Okapi(toks, k1=K1, b=B)
            else:
                import pickle

                with open(CACHE / "rank-bm25-big.pkl", "rb") as f:
                    okapi = pickle.load(f)
                run.extra["notes"].append("rank-bm25 on the large corpus: BM25Okapi built once by the "
                                          "preparation and unpickled (untimed)")
            q = qs[:z["q_rank_small"] if name == "rank_bm25_small" else z["q_rank_big"]]

            def go(_):
                out = []
                for t in tokenize(q, ids=False):
                    s = okapi.get_scores(t)
                    top = np.argsort(-s, kind="stable")[:H.K]
                    out.append([int(i) for i in top if s[i] > 0])
                return out

            run.extra["rankings"][f"rank_bm25_{name.split('_')[2]}"] = run.time(name, len(q), "queries", go)
            del okapi
        elif name == "bm25_index":
            texts = corpus(z["index"])
            new_bm25s().index(tokenize(texts[:200]), show_progress=False)  # JIT/imports warm

            def build(_):
                r = new_bm25s()
                r.index(tokenize(texts), show_progress=False)
                return r

            run.time(name, len(texts), "passages", build)
        elif name.startswith("hnsw_ef"):
            hnsw_bench(name, qs, z)
    run.emit(threads, ["bm25s", "rank-bm25", "hnswlib", "PyStemmer", "numpy"]
             + (["numba"] if BACKEND == "numba" else []))


_HNSW = {}


def hnsw_bench(name, qs, z):
    import hnswlib

    if not _HNSW:
        dim = json.loads((CACHE / "hnsw.json").read_text())["dim"]
        x = np.fromfile(CACHE / "hnsw-vectors.f32", dtype="<f4").reshape(-1, dim)
        q = np.fromfile(CACHE / "hnsw-queries.f32", dtype="<f4").reshape(-1, dim)
        idx = hnswlib.Index(space="ip", dim=dim)
        idx.init_index(max_elements=len(x), ef_construction=H.EF_CONSTRUCTION, M=H.M, random_seed=100)
        idx.add_items(x, np.arange(len(x)), num_threads=threads)
        sims = q @ x.T
        kth = -np.sort(-sims, axis=1)[:, H.K - 1]
        _HNSW.update(idx=idx, q=q, kth=kth)
    idx, q, kth = _HNSW["idx"], _HNSW["q"], _HNSW["kth"]
    ef = int(name.removeprefix("hnsw_ef"))
    idx.set_ef(ef)
    labels, dist = run.time(name, len(q), "queries", lambda _: idx.knn_query(q, k=H.K, num_threads=threads))
    # ann-benchmarks: a hit counts when its distance <= the true 10th distance + 1e-3.
    recall = float(np.mean(np.sum((1.0 - dist) >= kth[:, None] - 1e-3, axis=1) / H.K))
    run.extra["recall"][name] = recall
    run.checks[f"{name}_queries"] = len(q)


if MODE == "--prepare":
    prepare()
elif MODE == "--rss":
    rss()
else:
    main()
