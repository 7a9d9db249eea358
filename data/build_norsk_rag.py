#!/usr/bin/env python3
"""Builds the norsk-rag retrieval evaluation set (data/rag/) from its sources in
data/rag/source/*.txt, all written by the tilpass developers for this project (CC0).

    python3 data/build_norsk_rag.py

Source format (UTF-8, files read in name order):

    @doc DOC_ID | LANG | TITLE | TOPIC      starts a document (LANG: nb or nn)
    a paragraph (one or more lines)        one passage; passages are separated by blank lines
    ?LANG QUERY TEXT => REF:GRADE ...      a query with its judgements; REF is N (passage N of
                                           the current document, 1-based) or DOC_ID.N

Writes data/rag/passages.jsonl ({"id", "text", "title", "meta": {"doc", "lang", "topic"}};
passage ids DOC_ID-N), data/rag/queries.jsonl ({"id", "text", "lang"}; ids q001, q002, ... in
source order) and data/rag/qrels.txt (`qid 0 passage_id grade`, 2 = answers the query, 1 =
related or partial; unjudged passages count as 0). Standard library only; the output is
byte-identical on every run. Fails on an unknown reference, a duplicate id or a passage outside
40..=170 words.
"""

import json
import pathlib
import re
import sys

DATA = pathlib.Path(__file__).resolve().parent / "rag"
SRC = DATA / "source"


def fail(where, msg):
    sys.exit(f"{where}: {msg}")


def main():
    docs = {}  # doc id -> {"lang","title","topic","passages":[...]}
    order = []
    queries = []  # (text, lang, [(ref, grade)], where, doc)
    for path in sorted(SRC.glob("*.txt")):
        cur = None
        para = []

        def flush():
            if para:
                if cur is None:
                    fail(path, "text before the first @doc")
                docs[cur]["passages"].append(" ".join(para))
                para.clear()

        for n, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            line = raw.strip()
            where = f"{path.name}:{n}"
            if line.startswith("#"):
                continue
            if not line:
                flush()
            elif line.startswith("@doc "):
                flush()
                parts = [p.strip() for p in line[5:].split("|")]
                if len(parts) != 4 or parts[1] not in ("nb", "nn"):
                    fail(where, "expected @doc ID | nb|nn | TITLE | TOPIC")
                if parts[0] in docs:
                    fail(where, f"document {parts[0]} defined twice")
                cur = parts[0]
                order.append(cur)
                docs[cur] = {"lang": parts[1], "title": parts[2], "topic": parts[3], "passages": []}
            elif line.startswith("?"):
                flush()
                m = re.fullmatch(r"\?(nb|nn) (.+?) => (.+)", line)
                if not m:
                    fail(where, "expected ?nb|nn QUERY => REF:GRADE ...")
                refs = []
                for tok in m.group(3).split():
                    r = re.fullmatch(r"(?:([a-z0-9-]+)\.)?(\d+):([12])", tok)
                    if not r:
                        fail(where, f"bad judgement {tok!r}")
                    refs.append(((r.group(1) or cur), int(r.group(2)), int(r.group(3))))
                queries.append((m.group(2).strip(), m.group(1), refs, where))
            else:
                para.append(line)
        flush()

    passages = []
    ids = set()
    for d in order:
        doc = docs[d]
        for i, text in enumerate(doc["passages"], 1):
            pid = f"{d}-{i}"
            words = len(text.split())
            if not 40 <= words <= 170:
                fail(pid, f"{words} words; expected 40..=170")
            ids.add(pid)
            passages.append({
                "id": pid,
                "text": text,
                "title": doc["title"],
                "meta": {"doc": d, "lang": doc["lang"], "topic": doc["topic"]},
            })

    qrows, qrels = [], []
    seen_text = set()
    for i, (text, lang, refs, where) in enumerate(queries, 1):
        qid = f"q{i:03d}"
        if text in seen_text:
            fail(where, f"query {text!r} given twice")
        seen_text.add(text)
        qrows.append({"id": qid, "text": text, "lang": lang})
        judged = set()
        for doc, n, grade in refs:
            pid = f"{doc}-{n}"
            if pid not in ids:
                fail(where, f"unknown passage {pid}")
            if pid in judged:
                fail(where, f"{pid} judged twice")
            judged.add(pid)
            qrels.append(f"{qid} 0 {pid} {grade}")
        if not any(g == 2 for _, _, g in refs):
            fail(where, "no passage graded 2")

    def dump(name, rows):
        with open(DATA / name, "w", encoding="utf-8", newline="\n") as f:
            for r in rows:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")

    dump("passages.jsonl", passages)
    dump("queries.jsonl", qrows)
    (DATA / "qrels.txt").write_text("\n".join(qrels) + "\n", encoding="utf-8")
    nn_p = sum(p["meta"]["lang"] == "nn" for p in passages)
    nn_q = sum(q["lang"] == "nn" for q in qrows)
    words = sum(len(p["text"].split()) for p in passages)
    print(f"{len(order)} documents, {len(passages)} passages ({nn_p} nn), {words} words; "
          f"{len(qrows)} queries ({nn_q} nn), {len(qrels)} judgements "
          f"({sum(l.endswith(' 2') for l in qrels)} grade 2)")


if __name__ == "__main__":
    main()
