//! Classification metrics computed after every epoch on the validation split (the record they fill is
//! `domain::EpochMetrics`).

use crate::domain::LabelMetrics;

/// Accuracy, macro averages, per-label results and the confusion matrix of one evaluation.
#[derive(Debug, Clone, PartialEq)]
pub struct Classification {
    pub accuracy: f64,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub per_label: Vec<LabelMetrics>,
    /// `confusion[actual][predicted]`.
    pub confusion: Vec<Vec<u64>>,
}

/// The results of `predicted` against `actual` over `labels`. A label that is never predicted has
/// precision 0; one that never occurs has recall 0 and is left out of the macro averages only when it
/// is also never predicted.
pub fn classification(predicted: &[u32], actual: &[u32], labels: &[String]) -> Classification {
    let k = labels.len();
    let mut confusion = vec![vec![0u64; k]; k];
    for (&p, &a) in predicted.iter().zip(actual) {
        confusion[a as usize][p as usize] += 1;
    }
    let correct: u64 = (0..k).map(|c| confusion[c][c]).sum();
    let mut per_label = Vec::with_capacity(k);
    let (mut ps, mut rs, mut fs, mut classes) = (0.0, 0.0, 0.0, 0usize);
    for (c, label) in labels.iter().enumerate() {
        let tp = confusion[c][c];
        let support: u64 = confusion[c].iter().sum();
        let predicted_as: u64 = confusion.iter().map(|row| row[c]).sum();
        let ratio = |num: u64, den: u64| {
            if den > 0 {
                num as f64 / den as f64
            } else {
                0.0
            }
        };
        let precision = ratio(tp, predicted_as);
        let recall = ratio(tp, support);
        let f1 = if precision + recall > 0.0 {
            2.0 * precision * recall / (precision + recall)
        } else {
            0.0
        };
        if support + predicted_as > 0 {
            classes += 1;
            ps += precision;
            rs += recall;
            fs += f1;
        }
        per_label.push(LabelMetrics {
            label: label.clone(),
            precision,
            recall,
            f1,
            support,
        });
    }
    let n = actual.len();
    let m = classes.max(1) as f64;
    Classification {
        accuracy: if n == 0 {
            0.0
        } else {
            correct as f64 / n as f64
        },
        precision: ps / m,
        recall: rs / m,
        f1: fs / m,
        per_label,
        confusion,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_match_a_hand_computed_example() {
        // class a: tp 2, fp 1, fn 0 → p 2/3, r 1; class b: tp 1, fp 0, fn 1 → p 1, r 1/2;
        // class c: never seen nor predicted, left out of the averages.
        let labels = ["a".to_string(), "b".to_string(), "c".to_string()];
        let c = classification(&[0, 0, 0, 1], &[0, 0, 1, 1], &labels);
        assert!((c.accuracy - 0.75).abs() < 1e-9);
        assert!((c.precision - (2.0 / 3.0 + 1.0) / 2.0).abs() < 1e-9);
        assert!((c.recall - 0.75).abs() < 1e-9);
        let f_a = 2.0 * (2.0 / 3.0) / (2.0 / 3.0 + 1.0);
        let f_b = 2.0 * 0.5 / 1.5;
        assert!((c.f1 - (f_a + f_b) / 2.0).abs() < 1e-9);
        assert_eq!(
            c.confusion,
            vec![vec![2, 0, 0], vec![1, 1, 0], vec![0, 0, 0]]
        );
        assert_eq!(c.per_label[1].label, "b");
        assert!((c.per_label[1].recall - 0.5).abs() < 1e-9);
        assert_eq!(c.per_label[1].support, 2);
        assert_eq!(c.per_label[2].support, 0);
        assert_eq!(c.per_label[2].f1, 0.0);
    }
}
