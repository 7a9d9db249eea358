//! The decoder key/value cache.

use burn::tensor::Tensor;

/// Cached keys and values of every layer, `[batch, kv_heads, past, head_dim]` each.
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    layers: Vec<Option<(Tensor<4>, Tensor<4>)>>,
}

impl KvCache {
    /// An empty cache for `n_layers` layers.
    pub fn new(n_layers: usize) -> Self {
        Self {
            layers: vec![None; n_layers],
        }
    }

    /// A cache holding given keys and values per layer, `[batch, kv_heads, n, head_dim]` each
    /// (prefix tuning's virtual tokens).
    pub fn from_layers(layers: Vec<(Tensor<4>, Tensor<4>)>) -> Self {
        Self {
            layers: layers.into_iter().map(Some).collect(),
        }
    }

    /// Number of cached positions.
    pub fn len(&self) -> usize {
        self.layers
            .first()
            .and_then(|l| l.as_ref())
            .map(|(k, _)| k.dims()[2])
            .unwrap_or(0)
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Replaces every cached key and value tensor by `f(tensor)` (e.g. selecting beam rows).
    pub fn map(&mut self, f: impl Fn(Tensor<4>) -> Tensor<4>) {
        for (k, v) in self.layers.iter_mut().flatten() {
            *k = f(k.clone());
            *v = f(v.clone());
        }
    }

    /// Appends new keys/values of `layer` and returns the full ones.
    pub fn append(&mut self, layer: usize, k: Tensor<4>, v: Tensor<4>) -> (Tensor<4>, Tensor<4>) {
        let (k, v) = match self.layers[layer].take() {
            Some((pk, pv)) => (Tensor::cat(vec![pk, k], 2), Tensor::cat(vec![pv, v], 2)),
            None => (k, v),
        };
        self.layers[layer] = Some((k.clone(), v.clone()));
        (k, v)
    }
}
