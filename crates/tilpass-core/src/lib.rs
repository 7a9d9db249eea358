//! # tilpass-core
//!
//! The foundation every tilpass crate stands on:
//!
//! - [`Error`] and [`Result`]: the error type the other crates' errors convert into;
//! - [`DeviceSpec`]: a device parsed from a string (`flex`, `wgpu`, `wgpu-cpu`, `cuda:N`); the
//!   `tilpass` facade turns it into a burn `Device`;
//! - Hugging Face checkpoint I/O: [`ModelDir`] (`config.json`), [`Checkpoint`] (single and sharded
//!   safetensors, bf16/f16/f64 cast to f32, key remapping with [`KeyRemap`]),
//!   [`save_safetensors`] and [`save_sharded`];
//! - atomic file writes ([`write_atomic`]) for checkpoints that survive crashes;
//! - untrusted input: text files read with a BOM dropped, invalid UTF-8 and over-long lines
//!   named by file and line ([`TextLines`], [`read_text`]), and [`limits`] on the memory that
//!   sizes from files and flags may imply.

#![warn(missing_docs)]

pub mod checkpoint;
pub mod device;
pub mod error;
pub mod fs;
pub mod limits;
pub mod model_dir;
pub mod rng;
pub mod text;

pub use checkpoint::{
    Checkpoint, HostTensor, KeyRemap, SAFETENSORS_FILE, SAFETENSORS_INDEX_FILE, SaveDtype,
    TensorInfo, cast_to_f32, save_safetensors, save_sharded,
};
pub use device::DeviceSpec;
pub use error::{Error, Result};
pub use fs::{
    TempFile, forget_temp, read_json, remove_temp_files, temp_dir_for, write_atomic,
    write_atomic_with,
};
pub use model_dir::{CONFIG_FILE, ModelDir};
pub use rng::SplitMix64;
pub use safetensors::Dtype;
pub use text::{TextLines, UTF8_BOM, decode_utf8, read_text, strip_bom};
