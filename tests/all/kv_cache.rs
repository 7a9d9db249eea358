//! The decoder key/value cache grows in place: what it returns after each append equals the
//! concatenation of everything appended, across its capacity doublings, and a clone keeps
//! its own contents when either side appends on.

use tilpass::burn::tensor::{Device, Tensor, TensorData};
use tilpass::models::KvCache;

fn t(values: std::ops::Range<usize>, shape: [usize; 4], device: &Device) -> Tensor<4> {
    let v: Vec<f32> = values.map(|x| x as f32).collect();
    Tensor::from_data(TensorData::new(v, shape), device)
}

#[test]
fn appending_column_by_column_equals_concatenating() {
    let device = tilpass_tests::test_device();
    let (b, h, d) = (2, 3, 4);
    let col = |base: usize| t(base..base + b * h * d, [b, h, 1, d], &device);
    let mut cache = KvCache::new(2);
    let mut want_k = t(0..b * h * 5 * d, [b, h, 5, d], &device);
    let mut want_v = want_k.clone().mul_scalar(-1.0);
    cache.append(0, want_k.clone(), want_v.clone());
    // The keys enter as the projections give them: a [b, s, h, d] view swapped to [b, h, s, d].
    for step in 0..40 {
        let base = 1000 * (step + 1);
        let k = t(base..base + b * h * d, [b, 1, h, d], &device).swap_dims(1, 2);
        let v = k.clone().add_scalar(0.5);
        want_k = Tensor::cat(vec![want_k, k.clone()], 2);
        want_v = Tensor::cat(vec![want_v, v.clone()], 2);
        let (gk, gv) = cache.append(0, k, v);
        assert_eq!(cache.len(), 6 + step);
        assert_eq!(gk.to_data(), want_k.to_data(), "keys after step {step}");
        assert_eq!(gv.to_data(), want_v.to_data(), "values after step {step}");
    }
    // A clone keeps its own contents when the original appends on, and the other way round.
    let snapshot = cache.clone();
    let (ok, _) = cache.append(0, col(7), col(7));
    let mut again = snapshot.clone();
    let (gk, _) = again.append(0, col(9), col(9));
    assert_eq!(gk.dims(), [b, h, 46, d]);
    let old = |x: Tensor<4>| x.slice([0..b, 0..h, 0..45, 0..d]).to_data();
    assert_eq!(old(gk.clone()), want_k.to_data());
    assert_eq!(old(ok.clone()), want_k.to_data());
    let last = |x: Tensor<4>| x.slice([0..b, 0..h, 45..46, 0..d]).to_data();
    assert_eq!(last(ok), col(7).to_data());
    assert_eq!(last(gk), col(9).to_data());
    // `map` sees the filled positions only (here: keep the first batch row).
    let mut mapped = snapshot;
    mapped.map(|x| {
        assert_eq!(x.dims(), [b, h, 45, d]);
        x.slice([0..1, 0..h, 0..45, 0..d])
    });
    assert_eq!(mapped.len(), 45);
    let (mk, _) = mapped.append(
        0,
        col(5).slice([0..1, 0..h, 0..1, 0..d]),
        col(5).slice([0..1, 0..h, 0..1, 0..d]),
    );
    assert_eq!(
        mk.slice([0..1, 0..h, 0..45, 0..d]).to_data(),
        want_k.clone().slice([0..1, 0..h, 0..45, 0..d]).to_data()
    );
}

#[test]
fn reserve_keeps_the_contents_and_a_clone_apart() {
    let device = tilpass_tests::test_device();
    let (b, h, d) = (1, 2, 3);
    let mut cache = KvCache::new(1);
    let k0 = t(0..b * h * 4 * d, [b, h, 4, d], &device);
    cache.append(0, k0.clone(), k0.clone().neg());
    // A clone of a full cache, given room: its appends leave the original as it was.
    let mut copy = cache.clone();
    copy.reserve(3);
    assert_eq!(copy.len(), 4);
    let mut want = k0.clone();
    for step in 0..5 {
        let col = t(
            100 * (step + 1)..100 * (step + 1) + b * h * d,
            [b, h, 1, d],
            &device,
        );
        want = Tensor::cat(vec![want, col.clone()], 2);
        let (gk, gv) = copy.append(0, col.clone(), col.neg());
        assert_eq!(gk.to_data(), want.to_data(), "keys after step {step}");
        assert_eq!(
            gv.to_data(),
            want.clone().neg().to_data(),
            "values after step {step}"
        );
    }
    let col = t(7..7 + b * h * d, [b, h, 1, d], &device);
    let (ok, _) = cache.append(0, col.clone(), col.clone());
    assert_eq!(ok.to_data(), Tensor::cat(vec![k0, col], 2).to_data());
    // Reserving on an empty cache, or less than the room there is, changes nothing.
    let mut empty = KvCache::new(2);
    empty.reserve(8);
    assert!(empty.is_empty());
    copy.reserve(0);
    assert_eq!(copy.len(), 9);
}
