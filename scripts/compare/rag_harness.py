"""The `rag` group of scripts/compare/run.sh: its plan, the untimed preparation both sides
share, and the extra table lines (ranking overlap, HNSW recall, memory). Standard library only;
run.py imports it. The two sides are scripts/compare/rag.py (bm25s, rank-bm25, hnswlib) and
`tilpass-compare rag` (benches/compare_rag.rs).

Data (nothing of it in the repository):
- sentences: the shared UD Norwegian dev sentences (Bokmål then Nynorsk, CC BY-SA), read at bench
  time from the directory in TILPASS_RAG_SENTENCES (default ../shared/data/ud-norwegian beside
  the checkout);
- a synthetic corpus: passage i = 2-4 sentences drawn by a seeded generator (the sentence indices
  are written to `corpus.idx` in the cache, one passage a line); queries: 2-5 words (letters only,
  4+ characters) of a drawn sentence, `queries.txt`;
- the cache directory TILPASS_RAG_CACHE (default ~/.cache/tilpass-rag-bench/scale-S): corpus
  indices, queries, the large knowledge base, bm25s index and rank-bm25 object (built once,
  untimed), the HNSW vectors: MiniLM embeddings (tilpass's encoder, artefacts/minilm) of every
  sentence, a passage's vector being the normalised sum of its sentences' (embedding 20k
  passages themselves takes minutes on two cores), and of the queries; tilpass's HNSW graph of
  M / ef_construction below (hnswlib builds its own with the same settings; ef is set per
  benchmark on both sides).

Scale: TILPASS_RAG_SCALE (run.py --rag-scale, default 1): the "1M" corpus has 1,000,000 x scale
passages, the "10k" corpus 10,000 (at most the large one), indexing 100,000 x scale passages, HNSW
20,000 x scale vectors (at least 1,000).
"""

import json
import os
import pathlib
import random
import statistics
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
SEED = 20261201
K = 10
EF_CONSTRUCTION = 200
M = 16  # hnswlib's default (2M = 32 links on layer 0); both sides get the same M
EF_SEARCH = (16, 32, 64, 128, 256)


def scale():
    s = float(os.environ.get("TILPASS_RAG_SCALE", "1"))
    if not 0 < s <= 1:
        sys.exit(f"TILPASS_RAG_SCALE={s}: expected a number in (0, 1]")
    return s


def sizes():
    """Passages of the large and small corpora, of the indexing run, HNSW vectors; query counts."""
    s = scale()
    big = max(1000, round(1_000_000 * s))
    return {
        "big": big,
        "small": min(10_000, big),
        "index": max(1000, round(100_000 * s)),
        "hnsw": max(1000, round(20_000 * s)),
        "q_small": 1000,
        "q_big": 200,
        "q_rank_small": 100,
        "q_rank_big": 5,
        "q_hnsw": 500,
    }


def label(n):
    return f"{n // 1_000_000}M" if n % 1_000_000 == 0 else (f"{n // 1000}k" if n % 1000 == 0 else str(n))


def plan():
    """Rows of run.py's PLAN for the rag group."""
    z = sizes()
    b, s = label(z["big"]), label(z["small"])
    bm25s_ref, rank_ref = "bm25s (numba backend)", "rank-bm25 BM25Okapi"
    rows = [
        ("rag", "bm25_small", 1, 3, f"BM25 top-10, {z['q_small']} queries, {s} passages", bm25s_ref),
        ("rag", "bm25_big", 1, 3, f"BM25 top-10, {z['q_big']} queries, {b} passages", bm25s_ref),
        ("rag", "rank_bm25_small", 0, 1, f"BM25 top-10, {z['q_rank_small']} queries, {s} passages", rank_ref),
        ("rag", "rank_bm25_big", 0, 1, f"BM25 top-10, {z['q_rank_big']} queries (sample), {b} passages",
         rank_ref),
        ("rag", "bm25_index", 0, 2, f"BM25 indexing of {label(z['index'])} passages (analysis included)",
         "bm25s tokenize + index"),
    ]
    for ef in EF_SEARCH:
        rows.append(("rag", f"hnsw_ef{ef}", 1, 3,
                     f"HNSW top-10, {z['q_hnsw']} queries, {label(z['hnsw'])} MiniLM vectors, "
                     f"M {M}, ef_construction {EF_CONSTRUCTION}, ef {ef}", "hnswlib"))
    return rows


def cache_dir():
    d = os.environ.get("TILPASS_RAG_CACHE")
    if d:
        return pathlib.Path(d)
    return pathlib.Path.home() / ".cache" / "tilpass-rag-bench" / f"scale-{scale():g}"


def sentences_dir():
    return pathlib.Path(os.environ.get("TILPASS_RAG_SENTENCES", ROOT / ".." / "shared" / "data" / "ud-norwegian"))


def read_sentences():
    """The shared sentences: nob-dev.txt then nno-dev.txt, one a line, empty lines skipped (the
    Rust side reads them the same way)."""
    out = []
    for name in ("nob-dev.txt", "nno-dev.txt"):
        path = sentences_dir() / name
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as e:
            sys.exit(f"rag: {path}: {e} (set TILPASS_RAG_SENTENCES to the ud-norwegian directory)")
        out += [line.removesuffix("\r") for line in text.split("\n") if line.removesuffix("\r")]
    return out


def write_inputs(cache):
    """corpus.idx and queries.txt, deterministic for (seed, scale, sentences)."""
    done = cache / "inputs.done"
    z = sizes()
    cache.mkdir(parents=True, exist_ok=True)
    # Rewritten on every run (cheap): the HNSW settings both sides read may have changed.
    (cache / "sizes.json").write_text(json.dumps({**z, "k": K, "m": M, "ef_construction": EF_CONSTRUCTION,
                                                  "ef_search": list(EF_SEARCH)}) + "\n")
    if done.exists():
        return
    sents = read_sentences()
    rng = random.Random(SEED)
    with open(cache / "corpus.idx", "w") as f:
        for _ in range(z["big"]):
            n = rng.randint(2, 4)
            f.write(" ".join(str(rng.randrange(len(sents))) for _ in range(n)) + "\n")
    queries = []
    while len(queries) < max(z["q_small"], z["q_big"], z["q_hnsw"]):
        words = [w for w in sents[rng.randrange(len(sents))].split(" ") if len(w) >= 4 and w.isalpha()]
        if len(words) < 2:
            continue
        n = min(len(words), rng.randint(2, 5))
        start = rng.randrange(len(words) - n + 1)
        queries.append(" ".join(words[start:start + n]))
    (cache / "queries.txt").write_text("\n".join(queries) + "\n", encoding="utf-8")
    done.write_text("")


def prepare(rust_bin, python, env, log):
    """Untimed, once per run.sh call: the inputs, then each side's cached large index (and the
    embeddings, tilpass side); each step is skipped when its cache entry exists."""
    cache = cache_dir()
    env["TILPASS_RAG_CACHE"] = str(cache)
    env["TILPASS_RAG_SENTENCES"] = str(sentences_dir())
    write_inputs(cache)
    for cmd in ([rust_bin, "rag_prepare"], [python, str(ROOT / "scripts" / "compare" / "rag.py"), "--prepare"]):
        print(f"rag: preparing ({' '.join(cmd[-2:])}) in {cache} ...", file=sys.stderr, flush=True)
        p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
        with open(log, "a") as f:
            f.write(f"$ {' '.join(cmd)}\n{p.stderr}\n")
        if p.returncode != 0:
            sys.exit(f"failed ({p.returncode}): {' '.join(cmd)}\n{p.stderr[-3000:]}")


def _overlap(a, b):
    """Mean |top-k(a) ∩ top-k(b)| / k over queries, and the share of queries with equal lists."""
    shares, equal = [], 0
    for x, y in zip(a, b):
        n = max(len(x), len(y))
        shares.append(len(set(x) & set(y)) / n if n else 1.0)
        equal += x == y
    return statistics.mean(shares), equal / max(1, len(a))


def _mib(n):
    return f"{n / 2**20:,.0f} MiB"


def report(results):
    """Markdown lines after the table: overlap of each reference's top-10 with tilpass's, HNSW
    recall@10 (both sides, against their exact search), corpus statistics and memory."""
    reps = [(r, s, rep) for r, s, rep in results if rep.get("group") == "rag"]
    if not reps:
        return []
    first = {s: rep for r, s, rep in reps if r == 0}
    py, rs = first.get("python", {}), first.get("tilpass", {})
    lines = ["", "RAG details (round 1):", ""]
    rk_py, rk_rs, ties = py.get("rankings", {}), rs.get("rankings", {}), rs.get("tie_sets", {})
    for name in sorted(set(rk_py) & set(rk_rs)):
        mean, equal = _overlap(rk_py[name], rk_rs[name])
        tied = ""
        if name in ties:
            shares = [len(set(a) & set(t)) / len(a) if a else 1.0 for a, t in zip(rk_py[name], ties[name])]
            tied = (f"; {statistics.mean(shares):.3f} of the reference's top-10 score at least tilpass's 10th "
                    "(ties at the cut counted)")
        lines.append(f"- {name}: top-10 overlap with tilpass {mean:.3f} (mean share of common passages){tied}; "
                     f"identical top-10 lists {equal:.1%} of {len(rk_rs[name])} queries")
    th_py, th_rs = py.get("token_hashes"), rs.get("token_hashes")
    if th_py and th_rs and len(th_py) == len(th_rs):
        same = sum(a == b for a, b in zip(th_py, th_rs))
        lines.append(f"- tokenisation: the reference's terms equal tilpass's analysis chain on {same} of "
                     f"{len(th_rs)} passages of the small corpus")
    rec_py, rec_rs = py.get("recall", {}), rs.get("recall", {})
    for name in sorted(set(rec_py) | set(rec_rs)):
        lines.append(f"- {name}: recall@10 hnswlib {rec_py.get(name, float('nan')):.4f}, "
                     f"tilpass {rec_rs.get(name, float('nan')):.4f} (each against its own exact search, "
                     "ann-benchmarks rule: distance <= true 10th + 1e-3)")
    for side, rep in (("reference", py), ("tilpass", rs)):
        st = rep.get("stats", {})
        if st:
            lines.append(f"- {side} corpus statistics: " + ", ".join(f"{k} {v}" for k, v in sorted(st.items())))
    for side, rep in (("reference (bm25s)", py), ("tilpass", rs)):
        mem = rep.get("memory")
        if mem:
            lines.append(f"- {side} {label(mem['passages'])}-passage index: {_mib(mem['disk_bytes'])} on disk, "
                         f"peak RSS {_mib(mem['peak_rss_bytes'])} of a process that opens it and runs "
                         f"{mem['queries']} queries ({mem.get('how', '')})")
    for side, rep in (("reference", py), ("tilpass", rs)):
        for note in rep.get("notes", []):
            lines.append(f"- {side}: {note}")
    return lines
