//! Where training and inference run (`KILN_DEVICE`): the CPU, or a CUDA GPU when kiln is built with
//! the `cuda` feature.

use std::fmt;
use std::str::FromStr;

use anyhow::Result;
use candle_core::Device;

/// What `KILN_DEVICE` (or `--device`) asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    /// The first GPU when kiln is built with `cuda` and one can be opened, otherwise the CPU.
    #[default]
    Auto,
    Cpu,
    /// The GPU with this index (`cuda` is `cuda:0`).
    Cuda(usize),
}

impl FromStr for DeviceChoice {
    type Err = String;
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        let value = raw.trim().to_ascii_lowercase();
        match value.as_str() {
            "auto" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            "cuda" | "gpu" => Ok(Self::Cuda(0)),
            _ => value
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(Self::Cuda)
                .ok_or_else(|| {
                    format!(
                        "{raw:?} is not a device: auto, cpu, cuda or cuda:N (N the GPU's index, from 0)"
                    )
                }),
        }
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Auto => f.write_str("auto"),
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl DeviceChoice {
    /// How many GPUs jobs placed by this choice may train on, without opening a driver: a named GPU
    /// is one; `auto` counts the GPUs the NVIDIA driver lists (`/proc/driver/nvidia/gpus`) in a
    /// `cuda` build, none in a build without it; `cpu` none.
    pub fn gpus_visible(self) -> u32 {
        match self {
            Self::Cpu => 0,
            Self::Cuda(_) => 1,
            Self::Auto if cfg!(feature = "cuda") => std::fs::read_dir("/proc/driver/nvidia/gpus")
                .map(|entries| entries.count() as u32)
                .unwrap_or(0),
            Self::Auto => 0,
        }
    }
}

/// An opened device, with how to name it to a user.
#[derive(Debug, Clone)]
pub struct Placement {
    pub device: Device,
    /// `cpu` or `cuda:N`: what `Job.device` shows.
    pub name: String,
    /// Why `auto` chose the CPU in a build that could use a GPU, in words.
    pub note: Option<String>,
}

impl Placement {
    pub fn cpu() -> Self {
        Self {
            device: Device::Cpu,
            name: "cpu".into(),
            note: None,
        }
    }
}

/// Whether this kiln was built with the `cuda` feature.
pub const CUDA_BUILT: bool = cfg!(feature = "cuda");

impl DeviceChoice {
    /// Opens the device. An explicit GPU that cannot be opened is an error naming the setting;
    /// `auto` falls back to the CPU and says why in [`Placement::note`].
    pub fn open(self) -> Result<Placement> {
        match self {
            Self::Cpu => Ok(Placement::cpu()),
            Self::Cuda(index) => open_cuda(index)
                .map_err(|why| anyhow::anyhow!("KILN_DEVICE={self} cannot be used: {why}")),
            Self::Auto if CUDA_BUILT => Ok(open_cuda(0).unwrap_or_else(|why| Placement {
                note: Some(format!(
                    "kiln is built with CUDA but no GPU could be opened ({why}); running on the CPU"
                )),
                ..Placement::cpu()
            })),
            Self::Auto => Ok(Placement::cpu()),
        }
    }

    /// Refuses at start-up what can never work: a GPU asked of a build without `cuda`, or one that
    /// cannot be opened.
    pub fn check(self) -> Result<()> {
        match self {
            Self::Cuda(_) => self.open().map(drop),
            Self::Auto | Self::Cpu => Ok(()),
        }
    }
}

#[cfg(feature = "cuda")]
fn open_cuda(index: usize) -> Result<Placement, String> {
    // candle's error may carry a backtrace after its first line.
    let device = Device::new_cuda(index).map_err(|e| {
        let text = e.to_string();
        format!(
            "CUDA device {index}: {}",
            text.lines().next().unwrap_or_default()
        )
    })?;
    Ok(Placement {
        device,
        name: format!("cuda:{index}"),
        note: None,
    })
}

#[cfg(not(feature = "cuda"))]
fn open_cuda(_index: usize) -> Result<Placement, String> {
    Err(
        "this kiln was built without the `cuda` feature (cargo build --release --features cuda)"
            .into(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_settings_read_and_print_back() {
        for (raw, choice) in [
            ("auto", DeviceChoice::Auto),
            ("CPU", DeviceChoice::Cpu),
            ("cuda", DeviceChoice::Cuda(0)),
            ("cuda:3", DeviceChoice::Cuda(3)),
        ] {
            assert_eq!(raw.parse::<DeviceChoice>(), Ok(choice), "{raw}");
            assert_eq!(
                choice.to_string().parse::<DeviceChoice>(),
                Ok(choice),
                "{choice}"
            );
        }
        for bad in ["tpu", "cuda:", "cuda:-1", "cuda:one", ""] {
            let error = bad.parse::<DeviceChoice>().unwrap_err();
            assert!(error.contains("cpu, cuda or cuda:N"), "{bad}: {error}");
        }
    }

    #[test]
    fn a_gpu_is_refused_by_a_build_without_cuda_and_the_cpu_always_opens() {
        assert_eq!(DeviceChoice::Cpu.open().unwrap().name, "cpu");
        if !CUDA_BUILT {
            let auto = DeviceChoice::Auto.open().unwrap();
            assert_eq!((auto.name.as_str(), auto.note), ("cpu", None));
            let error = DeviceChoice::Cuda(0).check().unwrap_err().to_string();
            assert!(
                error.contains("KILN_DEVICE=cuda:0")
                    && error.contains("without the `cuda` feature"),
                "{error}"
            );
        }
    }
}
