//! The decoder key/value cache.
//!
//! Each layer's keys and values live in buffers with room to grow, `[batch, kv_heads,
//! capacity, head_dim]`, of which the first `len` positions are filled: a decode step writes
//! its new column into the buffer in place (burn's `slice_assign` on a buffer nobody else
//! holds) instead of concatenating the whole cache into a new tensor every step, which cost a
//! copy of every layer's cache per generated token. The capacity doubles when it runs out
//! (amortised: a few copies over a generation), so a cache may hold up to twice the memory of
//! its positions. Under autodiff (a cache built inside a training forward) appending
//! concatenates, as before.

use burn::tensor::Tensor;

/// One layer's keys and values: buffers `[batch, kv_heads, capacity, head_dim]`, positions
/// `0..len` filled.
#[derive(Debug, Clone)]
struct Slot {
    k: Tensor<4>,
    v: Tensor<4>,
    len: usize,
}

impl Slot {
    /// The filled part of a buffer, `[batch, kv_heads, len, head_dim]` (a view).
    fn filled(t: &Tensor<4>, len: usize) -> Tensor<4> {
        let [b, h, cap, d] = t.dims();
        if cap == len {
            t.clone()
        } else {
            t.clone().slice([0..b, 0..h, 0..len, 0..d])
        }
    }
}

/// Cached keys and values of every layer, `[batch, kv_heads, past, head_dim]` each.
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    layers: Vec<Option<Slot>>,
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
            layers: layers
                .into_iter()
                .map(|(k, v)| {
                    let len = k.dims()[2];
                    Some(Slot { k, v, len })
                })
                .collect(),
        }
    }

    /// Number of cached positions.
    pub fn len(&self) -> usize {
        self.layers
            .first()
            .and_then(|l| l.as_ref())
            .map_or(0, |s| s.len)
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Replaces every cached key and value tensor `[batch, kv_heads, past, head_dim]` by
    /// `f(tensor)` (e.g. selecting beam rows).
    pub fn map(&mut self, f: impl Fn(Tensor<4>) -> Tensor<4>) {
        for slot in self.layers.iter_mut().flatten() {
            let k = f(Slot::filled(&slot.k, slot.len));
            let v = f(Slot::filled(&slot.v, slot.len));
            let len = k.dims()[2];
            *slot = Slot { k, v, len };
        }
    }

    /// Makes room for `extra` more positions in every layer, so that the next appends write
    /// in place: a layer whose buffer has no room for them gets a buffer of exactly
    /// `len + extra` positions with the cached ones copied in; layers with room keep theirs.
    /// A cache built under autodiff is left as it is (it concatenates). For decode loops that
    /// know how many tokens follow. (A [`Clone`] shares the buffers of the original; a full
    /// one given room here has buffers of its own, which its appends then write in place.)
    pub fn reserve(&mut self, extra: usize) {
        for slot in self.layers.iter_mut().flatten() {
            if slot.k.is_tracked() || slot.v.is_tracked() {
                continue;
            }
            let len = slot.len;
            let grow = |buf: &Tensor<4>| -> Tensor<4> {
                let [b, h, cap, d] = buf.dims();
                if len + extra <= cap {
                    return buf.clone();
                }
                let fresh =
                    Tensor::<4>::empty([b, h, len + extra, d], (&buf.device(), buf.dtype()));
                fresh.slice_assign([0..b, 0..h, 0..len, 0..d], Slot::filled(buf, len))
            };
            slot.k = grow(&slot.k);
            slot.v = grow(&slot.v);
        }
    }

    /// Appends new keys/values `[batch, kv_heads, new, head_dim]` of `layer` and returns the
    /// full ones, `[batch, kv_heads, past + new, head_dim]`.
    pub fn append(&mut self, layer: usize, k: Tensor<4>, v: Tensor<4>) -> (Tensor<4>, Tensor<4>) {
        let new = k.dims()[2];
        let Some(slot) = self.layers[layer].take() else {
            self.layers[layer] = Some(Slot {
                k: k.clone(),
                v: v.clone(),
                len: new,
            });
            return (k, v);
        };
        let len = slot.len + new;
        if k.is_tracked() || v.is_tracked() || slot.k.is_tracked() || slot.v.is_tracked() {
            // Inside a training graph: concatenate (the gradient flows through both parts).
            let k = Tensor::cat(vec![Slot::filled(&slot.k, slot.len), k], 2);
            let v = Tensor::cat(vec![Slot::filled(&slot.v, slot.len), v], 2);
            self.layers[layer] = Some(Slot {
                k: k.clone(),
                v: v.clone(),
                len,
            });
            return (k, v);
        }
        // Moved out of the slot, so that the buffers are unique and written in place.
        let Slot {
            k: kb,
            v: vb,
            len: old,
        } = slot;
        let grow = |buf: Tensor<4>| -> Tensor<4> {
            let [b, h, cap, d] = buf.dims();
            if len <= cap {
                return buf;
            }
            let cap = len.max(2 * cap);
            // Uninitialised: only positions `0..len` are ever read (the views `filled` gives).
            let fresh = Tensor::<4>::empty([b, h, cap, d], (&buf.device(), buf.dtype()));
            fresh.slice_assign([0..b, 0..h, 0..old, 0..d], Slot::filled(&buf, old))
        };
        let write = |buf: Tensor<4>, x: Tensor<4>| -> Tensor<4> {
            let [b, h, _, d] = buf.dims();
            buf.slice_assign([0..b, 0..h, old..len, 0..d], x)
        };
        let kb = write(grow(kb), k);
        let vb = write(grow(vb), v);
        let out = (Slot::filled(&kb, len), Slot::filled(&vb, len));
        self.layers[layer] = Some(Slot { k: kb, v: vb, len });
        out
    }
}
