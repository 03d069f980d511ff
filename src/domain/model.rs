//! The model registry's records: named models and their numbered versions.

use super::EpochMetrics;

/// A registry model: a name that versions are filed under.
#[derive(Debug, Clone)]
pub struct ModelRecord {
    pub name: String,
    pub created_at: i64,
}

/// One trained version of a model, tied to the job and dataset that produced it.
#[derive(Debug, Clone)]
pub struct ModelVersionRecord {
    pub id: String,
    pub model_name: String,
    /// 1, 2, … within its model.
    pub version: i64,
    pub job_id: String,
    pub dataset_id: String,
    /// Where its files are: `s3://bucket/prefix/…` or `file:///dir/…`.
    pub artifact_uri: String,
    /// The final epoch's metrics.
    pub metrics: EpochMetrics,
    pub created_at: i64,
}

/// A version number as text: decimal digits only, no sign and no leading zero, from 1. What a path
/// or a `model:NAME/VERSION` reference names, so that `1`, `+1` and `01` are not three names for one
/// version.
pub fn version_number(text: &str) -> Option<i64> {
    let plain =
        !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) && !text.starts_with('0');
    plain.then(|| text.parse::<i64>().ok()).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_numbers_have_one_spelling() {
        assert_eq!(version_number("1"), Some(1));
        assert_eq!(version_number("42"), Some(42));
        for other in [
            "",
            "0",
            "01",
            "+1",
            "-1",
            " 1",
            "1.0",
            "1e3",
            "99999999999999999999",
        ] {
            assert_eq!(version_number(other), None, "{other:?}");
        }
    }
}
