//! Devices from strings and checkpoints onto devices.

use tilpass::core::{Checkpoint, HostTensor, SaveDtype, save_sharded};

#[test]
fn sharded_bf16_checkpoint_loads_onto_the_device() {
    let device = tilpass::device("flex").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let w = HostTensor::new(vec![2, 3], vec![1.0, -2.0, 0.5, 4.0, 8.0, -0.25]).unwrap();
    let b = HostTensor::new(vec![3], vec![0.0, 1.0, 2.0]).unwrap();
    save_sharded(dir.path(), [("w", &w), ("b", &b)], SaveDtype::Bf16, 16).unwrap();
    let ckpt = Checkpoint::open(dir.path()).unwrap();
    assert_eq!(ckpt.files().len(), 2);
    let t = ckpt.tensor::<2>("w", [2, 3], &device).unwrap();
    assert_eq!(HostTensor::from_tensor(&t), w);
    let err = ckpt.tensor::<2>("w", [3, 2], &device).unwrap_err();
    assert!(err.to_string().contains("expected shape [3, 2]"), "{err}");
    let bias = ckpt.tensor::<1>("b", [3], &device).unwrap();
    let y = t.sum_dim(0).squeeze_dim::<1>(0) + bias;
    assert_eq!(HostTensor::from_tensor(&y).data, vec![5.0, 7.0, 2.25]);
}

#[test]
fn compiled_backends_are_listed() {
    let b = tilpass::compiled_backends();
    assert!(b.contains(&"flex"), "{b:?}");
}

#[cfg(feature = "wgpu")]
#[test]
fn wgpu_cpu_device_runs_a_matmul() {
    let device = tilpass::device("wgpu-cpu").unwrap();
    let a = tilpass::burn::tensor::Tensor::<2>::from_floats([[1.0, 2.0], [3.0, 4.0]], &device);
    let c = a.clone().matmul(a);
    assert_eq!(
        HostTensor::from_tensor(&c).data,
        vec![7.0, 10.0, 15.0, 22.0]
    );
}
