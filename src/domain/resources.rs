//! What a job asks of the machine it runs on (`submitJob`'s `resources`): CPUs, memory and GPUs. A
//! Kubernetes pod gets them as its requests and limits; a local job process is bounded by them where
//! Linux allows (an address-space limit, its thread count); a worker claims only jobs whose GPUs it has.

use serde::{Deserialize, Serialize};

use super::FieldError;

/// The most CPUs, GiB of memory and GPUs one job may ask for.
pub const MAX_CPUS: f64 = 512.0;
pub const MAX_MEMORY_GB: f64 = 4096.0;
pub const MAX_GPUS: u32 = 16;

/// What a submission asked for, unchecked.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ResourcesInput {
    pub cpus: Option<f64>,
    pub memory_gb: Option<f64>,
    pub gpus: Option<i64>,
}

/// What a job asks for; `None`: no bound (the worker's own settings apply).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Resources {
    /// CPU cores, fractions allowed (`0.5`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<f64>,
    /// Memory in GiB (2^30 bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_gb: Option<f64>,
    /// Whole GPUs.
    #[serde(default)]
    pub gpus: u32,
}

impl Resources {
    /// Checks what a submission asked for; errors name the field under `resources`.
    pub fn parse(input: &ResourcesInput) -> Result<Self, FieldError> {
        let ResourcesInput {
            cpus,
            memory_gb,
            gpus,
        } = *input;
        let positive = |field: &str, value: Option<f64>, max: f64| match value {
            Some(v) if !(v.is_finite() && v > 0.0 && v <= max) => Err(FieldError::new(
                format!("resources.{field}"),
                format!("must be greater than 0 and at most {max} (got {v})"),
            )),
            other => Ok(other),
        };
        let cpus = positive("cpus", cpus, MAX_CPUS)?;
        if let Some(c) = cpus
            && c < 0.01
        {
            return Err(FieldError::new(
                "resources.cpus",
                format!("must be at least 0.01 (got {c})"),
            ));
        }
        let memory_gb = positive("memoryGb", memory_gb, MAX_MEMORY_GB)?;
        let gpus = match gpus {
            None => 0,
            Some(g) if (0..=MAX_GPUS as i64).contains(&g) => g as u32,
            Some(g) => {
                return Err(FieldError::new(
                    "resources.gpus",
                    format!("must be between 0 and {MAX_GPUS} (got {g})"),
                ));
            }
        };
        Ok(Self {
            cpus,
            memory_gb,
            gpus,
        })
    }

    /// The memory bound in bytes.
    pub fn memory_bytes(&self) -> Option<u64> {
        self.memory_gb.map(|gb| (gb * (1u64 << 30) as f64) as u64)
    }

    /// The threads a job's matrix products may use: its CPUs rounded up.
    pub fn threads(&self) -> Option<usize> {
        self.cpus.map(|c| (c.ceil() as usize).max(1))
    }

    /// As Kubernetes writes a quantity of CPU: whole cores, or millicores (`500m`).
    pub fn cpu_quantity(&self) -> Option<String> {
        self.cpus.map(|c| {
            let milli = (c * 1000.0).round() as u64;
            if milli.is_multiple_of(1000) {
                (milli / 1000).to_string()
            } else {
                format!("{milli}m")
            }
        })
    }

    /// As Kubernetes writes a quantity of memory: whole GiB (`4Gi`) or MiB (`1536Mi`).
    pub fn memory_quantity(&self) -> Option<String> {
        self.memory_gb.map(|gb| {
            let mib = (gb * 1024.0).round() as u64;
            if mib.is_multiple_of(1024) {
                format!("{}Gi", mib / 1024)
            } else {
                format!("{mib}Mi")
            }
        })
    }

    /// "2 CPUs, 8 GiB, 1 GPU", for messages; `None` when nothing was asked for.
    pub fn describe(&self) -> Option<String> {
        let mut parts = Vec::new();
        if let Some(c) = self.cpus {
            parts.push(format!("{c} CPU{}", if c == 1.0 { "" } else { "s" }));
        }
        if let Some(m) = self.memory_gb {
            parts.push(format!("{m} GiB"));
        }
        if self.gpus > 0 {
            parts.push(gpus_phrase(self.gpus));
        }
        (!parts.is_empty()).then(|| parts.join(", "))
    }
}

/// "1 GPU", "2 GPUs".
pub fn gpus_phrase(gpus: u32) -> String {
    format!("{gpus} GPU{}", if gpus == 1 { "" } else { "s" })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_are_checked_and_written_as_kubernetes_quantities() {
        let parse = |cpus, memory_gb, gpus| {
            Resources::parse(&ResourcesInput {
                cpus,
                memory_gb,
                gpus,
            })
        };
        let r = parse(Some(0.5), Some(1.5), Some(1)).unwrap();
        assert_eq!(r.cpu_quantity().as_deref(), Some("500m"));
        assert_eq!(r.memory_quantity().as_deref(), Some("1536Mi"));
        assert_eq!(r.memory_bytes(), Some(3 << 29));
        assert_eq!(r.threads(), Some(1));
        assert_eq!(r.describe().as_deref(), Some("0.5 CPUs, 1.5 GiB, 1 GPU"));
        let whole = parse(Some(4.0), Some(16.0), None).unwrap();
        assert_eq!(whole.cpu_quantity().as_deref(), Some("4"));
        assert_eq!(whole.memory_quantity().as_deref(), Some("16Gi"));
        assert_eq!(whole.gpus, 0);
        assert_eq!(Resources::default().describe(), None);

        let refused = |c, m, g| parse(c, m, g).unwrap_err();
        assert_eq!(refused(Some(0.0), None, None).field, "resources.cpus");
        assert_eq!(refused(Some(f64::NAN), None, None).field, "resources.cpus");
        assert_eq!(refused(None, Some(-1.0), None).field, "resources.memoryGb");
        assert_eq!(refused(None, Some(1e9), None).field, "resources.memoryGb");
        let gpus = refused(None, None, Some(17));
        assert_eq!(gpus.field, "resources.gpus");
        assert_eq!(gpus.message, "must be between 0 and 16 (got 17)");
    }
}
