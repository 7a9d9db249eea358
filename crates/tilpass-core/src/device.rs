//! Device selection from a string such as `flex`, `wgpu-cpu` or `cuda:0`.
//!
//! Library crates in tilpass enable no burn backend, so this module only *parses* a device string
//! into a [`DeviceSpec`]. The `tilpass` facade crate, which owns the backend features, turns a spec
//! into a burn `Device` and reports [`Error::BackendNotCompiled`] for a backend it was built
//! without.

use std::fmt;
use std::str::FromStr;

use crate::error::Error;

/// A parsed device string.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub enum DeviceSpec {
    /// burn's pure-Rust CPU backend (`flex`, also accepted as `cpu`); the default.
    #[default]
    Flex,
    /// wgpu on its default adapter (`wgpu`).
    Wgpu,
    /// wgpu on a CPU adapter, e.g. Mesa's lavapipe (`wgpu-cpu`).
    WgpuCpu,
    /// wgpu on the N-th discrete GPU (`wgpu:N`).
    WgpuDiscrete(usize),
    /// CUDA device N (`cuda` is `cuda:0`).
    Cuda(usize),
}

impl DeviceSpec {
    /// The cargo feature of the `tilpass` crate that provides this device's backend.
    pub fn feature(&self) -> &'static str {
        match self {
            DeviceSpec::Flex => "flex",
            DeviceSpec::Wgpu | DeviceSpec::WgpuCpu | DeviceSpec::WgpuDiscrete(_) => "wgpu",
            DeviceSpec::Cuda(_) => "cuda",
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::Flex => write!(f, "flex"),
            DeviceSpec::Wgpu => write!(f, "wgpu"),
            DeviceSpec::WgpuCpu => write!(f, "wgpu-cpu"),
            DeviceSpec::WgpuDiscrete(i) => write!(f, "wgpu:{i}"),
            DeviceSpec::Cuda(i) => write!(f, "cuda:{i}"),
        }
    }
}

impl FromStr for DeviceSpec {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let spec = s.trim().to_ascii_lowercase();
        let invalid = |reason: &str| Error::InvalidDevice {
            spec: s.to_string(),
            reason: reason.to_string(),
        };
        let (name, index) = match spec.split_once(':') {
            Some((name, idx)) => {
                let idx: usize = idx.parse().map_err(|_| {
                    invalid("the part after `:` must be a device index (0, 1, ...)")
                })?;
                (name, Some(idx))
            }
            None => (spec.as_str(), None),
        };
        match (name, index) {
            ("flex" | "cpu", None) => Ok(DeviceSpec::Flex),
            ("flex" | "cpu", Some(_)) => Err(invalid("the CPU backend takes no index")),
            ("wgpu", None) => Ok(DeviceSpec::Wgpu),
            ("wgpu", Some(i)) => Ok(DeviceSpec::WgpuDiscrete(i)),
            ("wgpu-cpu", None) => Ok(DeviceSpec::WgpuCpu),
            ("wgpu-cpu", Some(_)) => Err(invalid("`wgpu-cpu` takes no index")),
            ("cuda", i) => Ok(DeviceSpec::Cuda(i.unwrap_or(0))),
            ("", _) => Err(invalid("empty device string")),
            _ => Err(invalid("unknown backend")),
        }
    }
}

impl TryFrom<String> for DeviceSpec {
    type Error = Error;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        value.parse()
    }
}

impl From<DeviceSpec> for String {
    fn from(value: DeviceSpec) -> Self {
        value.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_documented_form() {
        let cases = [
            ("flex", DeviceSpec::Flex),
            ("CPU", DeviceSpec::Flex),
            ("wgpu", DeviceSpec::Wgpu),
            ("wgpu-cpu", DeviceSpec::WgpuCpu),
            ("wgpu:1", DeviceSpec::WgpuDiscrete(1)),
            ("cuda", DeviceSpec::Cuda(0)),
            (" cuda:3 ", DeviceSpec::Cuda(3)),
        ];
        for (s, want) in cases {
            assert_eq!(s.parse::<DeviceSpec>().unwrap(), want, "{s}");
            // Display round-trips through FromStr.
            assert_eq!(want.to_string().parse::<DeviceSpec>().unwrap(), want);
        }
    }

    #[test]
    fn rejects_bad_strings_with_a_reason() {
        for s in ["", "tpu", "cuda:x", "flex:1", "wgpu-cpu:2", "cuda:-1"] {
            let err = s.parse::<DeviceSpec>().unwrap_err();
            let msg = err.to_string();
            assert!(matches!(err, Error::InvalidDevice { .. }), "{s}: {msg}");
            assert!(msg.contains("Expected one of"), "{msg}");
        }
    }

    #[test]
    fn features_name_the_backend() {
        assert_eq!(DeviceSpec::Flex.feature(), "flex");
        assert_eq!(DeviceSpec::WgpuCpu.feature(), "wgpu");
        assert_eq!(DeviceSpec::Cuda(1).feature(), "cuda");
    }

    #[test]
    fn serde_uses_the_string_form() {
        let json = serde_json::to_string(&DeviceSpec::Cuda(2)).unwrap();
        assert_eq!(json, "\"cuda:2\"");
        let back: DeviceSpec = serde_json::from_str("\"wgpu-cpu\"").unwrap();
        assert_eq!(back, DeviceSpec::WgpuCpu);
        assert!(serde_json::from_str::<DeviceSpec>("\"gpu\"").is_err());
    }
}
