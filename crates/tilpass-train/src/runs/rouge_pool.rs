//! The instructions a self-instruct job has seen, indexed so that the most similar one by
//! ROUGE-L is found without scoring every one of them.
//!
//! [`RougePool::best`] returns exactly what the exhaustive loop returns — the highest ROUGE-L
//! F-measure (rouge-score's, as [`Rouge::score`] with the instruction as the prediction and
//! each pooled one as the target) and the first pooled instruction reaching it — but only
//! computes the longest common subsequence for instructions that could reach the best score so
//! far: the LCS of two token sequences is at most the size of their token multiset
//! intersection, so `F(min(overlap, m, n))` bounds an instruction's score. Overlaps come from
//! an inverted index (token → instructions with their token counts); instructions sharing no
//! token score 0. With 100,000 seed instructions a candidate costs milliseconds instead of the
//! hundreds of milliseconds of tokenizing and scoring every pair.
//!
//! Memory: the token ids of every instruction (4 bytes a token) and one index entry per
//! distinct token of each (8 bytes), plus the vocabulary.

use std::collections::HashMap;

use tilpass_metrics::{Rouge, RougeTokenizer};

/// Instructions tokenized and indexed for [`RougePool::best`].
#[derive(Debug, Clone)]
pub struct RougePool {
    tokenizer: RougeTokenizer,
    vocab: HashMap<String, u32>,
    docs: Vec<Vec<u32>>,
    /// Per token id: `(instruction, count of the token in it)`, instructions ascending.
    postings: Vec<Vec<(u32, u32)>>,
}

/// rouge-score's F-measure for an LCS of `l` tokens between a prediction of `n` tokens and a
/// target of `m` tokens, with the same floating-point steps as [`Rouge::score`].
fn fmeasure(l: usize, n: usize, m: usize) -> f64 {
    if n == 0 || m == 0 {
        return 0.0;
    }
    let l = l as f64;
    let (p, r) = (l / n as f64, l / m as f64);
    if p + r > 0.0 {
        2.0 * p * r / (p + r)
    } else {
        0.0
    }
}

/// Length of the longest common subsequence of `a` and `b` (one row of the table at a time).
fn lcs(a: &[u32], b: &[u32]) -> usize {
    let mut prev = vec![0u32; b.len() + 1];
    let mut cur = vec![0u32; b.len() + 1];
    for x in a {
        for (j, y) in b.iter().enumerate() {
            cur[j + 1] = if x == y {
                prev[j] + 1
            } else {
                prev[j + 1].max(cur[j])
            };
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()] as usize
}

impl RougePool {
    /// An empty pool tokenizing with `tokenizer` (that of the [`Rouge`] it stands in for).
    pub fn new(tokenizer: RougeTokenizer) -> Self {
        Self {
            tokenizer,
            vocab: HashMap::new(),
            docs: Vec::new(),
            postings: Vec::new(),
        }
    }

    /// A pool for the ROUGE-L of `rouge`.
    pub fn for_rouge(rouge: &Rouge) -> Self {
        Self::new(rouge.tokenizer)
    }

    /// Instructions in the pool.
    pub fn len(&self) -> usize {
        self.docs.len()
    }

    /// True when the pool holds no instruction.
    pub fn is_empty(&self) -> bool {
        self.docs.is_empty()
    }

    /// Adds an instruction (its index is the count before).
    pub fn push(&mut self, text: &str) {
        let d = self.docs.len() as u32;
        let mut ids = Vec::new();
        for t in self.tokenizer.tokenize(text) {
            let next = self.vocab.len() as u32;
            let id = *self.vocab.entry(t).or_insert(next);
            if id == next {
                self.postings.push(Vec::new());
            }
            ids.push(id);
        }
        let mut counts: Vec<(u32, u32)> = Vec::new();
        let mut sorted = ids.clone();
        sorted.sort_unstable();
        for id in sorted {
            match counts.last_mut() {
                Some((t, c)) if *t == id => *c += 1,
                _ => counts.push((id, 1)),
            }
        }
        for (id, c) in counts {
            self.postings[id as usize].push((d, c));
        }
        ids.shrink_to_fit();
        self.docs.push(ids);
    }

    /// The highest ROUGE-L F-measure of `text` (as the prediction) against any pooled
    /// instruction (as the target), and the first instruction reaching it; `(0.0, None)` for an
    /// empty pool. Equal to scoring every instruction with [`Rouge::score`] and keeping the
    /// first strictly better one.
    pub fn best(&self, text: &str) -> (f64, Option<usize>) {
        if self.docs.is_empty() {
            return (0.0, None);
        }
        // Token ids of the candidate; a token outside the vocabulary matches nothing.
        let tokens = self.tokenizer.tokenize(text);
        let n = tokens.len();
        let mut ids: Vec<u32> = Vec::with_capacity(n);
        let mut counts: HashMap<u32, u32> = HashMap::new();
        for t in &tokens {
            match self.vocab.get(t) {
                Some(&id) => {
                    ids.push(id);
                    *counts.entry(id).or_default() += 1;
                }
                None => ids.push(u32::MAX),
            }
        }
        // Multiset overlaps with every instruction sharing a token.
        let mut overlap = vec![0u32; self.docs.len()];
        let mut touched: Vec<u32> = Vec::new();
        for (&id, &q) in &counts {
            for &(d, c) in &self.postings[id as usize] {
                let o = &mut overlap[d as usize];
                if *o == 0 {
                    touched.push(d);
                }
                *o += q.min(c);
            }
        }
        // Instructions sharing no token score 0: the exhaustive loop's answer is then the
        // first instruction.
        let mut best = (0.0f64, 0usize);
        let bound = |d: u32| {
            let m = self.docs[d as usize].len();
            fmeasure((overlap[d as usize] as usize).min(n).min(m), n, m)
        };
        let exact = |d: u32| {
            let doc = &self.docs[d as usize];
            fmeasure(lcs(doc, &ids), n, doc.len())
        };
        let consider = |best: &mut (f64, usize), d: u32| {
            let f = exact(d);
            if f > best.0 || (f == best.0 && (d as usize) < best.1) {
                *best = (f, d as usize);
            }
        };
        // A first bar from the instruction with the largest overlap, then every instruction
        // whose bound reaches the bar, by bound (a margin keeps rounding from pruning a tie).
        if let Some(&top) = touched
            .iter()
            .max_by_key(|&&d| (overlap[d as usize], std::cmp::Reverse(d)))
        {
            consider(&mut best, top);
        }
        let margin = 1e-9;
        let mut open: Vec<(f64, u32)> = touched
            .iter()
            .map(|&d| (bound(d), d))
            .filter(|&(b, _)| b >= best.0 - margin)
            .collect();
        open.sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        for (b, d) in open {
            if b < best.0 - margin {
                break;
            }
            consider(&mut best, d);
        }
        (best.0, Some(best.1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tilpass_metrics::RougeType;

    /// The exhaustive loop self-instruct ran before the pool.
    fn exhaustive(rouge: &Rouge, pool: &[String], text: &str) -> (f64, Option<usize>) {
        let mut best: (f64, Option<usize>) = (0.0, None);
        for (k, earlier) in pool.iter().enumerate() {
            let f = rouge.score(earlier, text).scores["rougeL"].fmeasure;
            if best.1.is_none() || f > best.0 {
                best = (f, Some(k));
            }
        }
        best
    }

    #[test]
    fn the_pool_gives_the_exhaustive_answer() {
        let rouge = Rouge::new(&[RougeType::L], RougeTokenizer::default());
        let chat = tilpass_data::embedded::norsk_chat(None).unwrap();
        // Seed-like instructions with repeats and near-copies (ties), plus the answers.
        let mut texts: Vec<String> = Vec::new();
        for (k, c) in chat.iter().enumerate() {
            texts.push(c.messages[0].content.clone());
            if k % 5 == 0 {
                texts.push(c.messages[0].content.clone());
            }
            if k % 7 == 0 {
                texts.push(format!("{} nå", c.messages[0].content));
            }
        }
        let (pool_texts, queries) = texts.split_at(texts.len() * 2 / 3);
        let mut pool = RougePool::for_rouge(&rouge);
        assert_eq!(pool.best("hva som helst"), (0.0, None));
        for t in pool_texts {
            pool.push(t);
        }
        assert_eq!(pool.len(), pool_texts.len());
        let mut candidates: Vec<String> = queries.to_vec();
        candidates.extend(chat.iter().take(60).map(|c| c.messages[1].content.clone()));
        candidates.extend(pool_texts.iter().take(40).cloned());
        candidates.extend(["".to_string(), "zzz qqq".into(), "Hva Hva hva er er".into()]);
        let mut high = 0;
        for c in &candidates {
            let want = exhaustive(&rouge, pool_texts, c);
            let got = pool.best(c);
            assert_eq!(got.1, want.1, "{c}");
            assert_eq!(got.0.to_bits(), want.0.to_bits(), "{c}");
            high += usize::from(want.0 >= 0.7);
        }
        // The comparison covers rejections (>= 0.7), not only easy misses.
        assert!(high >= 40, "{high}");
        assert_eq!(lcs(&[1, 2, 3, 4], &[2, 4, 3]), 2);
    }
}
