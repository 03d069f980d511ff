//! Classification metrics computed after every epoch on the validation split (the record they fill is
//! `domain::EpochMetrics`).

/// Accuracy and macro precision/recall/F1 of `predicted` against `actual` over `num_labels` classes.
/// A class that is never predicted has precision 0; one that never occurs has recall 0 and is left out
/// of the averages only when it is also never predicted.
pub fn classification(
    predicted: &[u32],
    actual: &[u32],
    num_labels: usize,
) -> (f64, f64, f64, f64) {
    let n = actual.len();
    if n == 0 {
        return (0.0, 0.0, 0.0, 0.0);
    }
    let mut tp = vec![0u64; num_labels];
    let mut fp = vec![0u64; num_labels];
    let mut fn_ = vec![0u64; num_labels];
    let mut correct = 0;
    for (&p, &a) in predicted.iter().zip(actual) {
        if p == a {
            correct += 1;
            tp[p as usize] += 1;
        } else {
            fp[p as usize] += 1;
            fn_[a as usize] += 1;
        }
    }
    let (mut ps, mut rs, mut fs, mut classes) = (0.0, 0.0, 0.0, 0usize);
    for c in 0..num_labels {
        if tp[c] + fp[c] + fn_[c] == 0 {
            continue;
        }
        classes += 1;
        let precision = if tp[c] + fp[c] > 0 {
            tp[c] as f64 / (tp[c] + fp[c]) as f64
        } else {
            0.0
        };
        let recall = if tp[c] + fn_[c] > 0 {
            tp[c] as f64 / (tp[c] + fn_[c]) as f64
        } else {
            0.0
        };
        let f1 = if precision + recall > 0.0 {
            2.0 * precision * recall / (precision + recall)
        } else {
            0.0
        };
        ps += precision;
        rs += recall;
        fs += f1;
    }
    let k = classes.max(1) as f64;
    (correct as f64 / n as f64, ps / k, rs / k, fs / k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macro_metrics_match_a_hand_computed_example() {
        // class 0: tp 2, fp 1, fn 0 → p 2/3, r 1; class 1: tp 1, fp 0, fn 1 → p 1, r 1/2
        let (acc, p, r, f1) = classification(&[0, 0, 0, 1], &[0, 0, 1, 1], 2);
        assert!((acc - 0.75).abs() < 1e-9);
        assert!((p - (2.0 / 3.0 + 1.0) / 2.0).abs() < 1e-9);
        assert!((r - 0.75).abs() < 1e-9);
        let f_a = 2.0 * (2.0 / 3.0) / (2.0 / 3.0 + 1.0);
        let f_b = 2.0 * 0.5 / 1.5;
        assert!((f1 - (f_a + f_b) / 2.0).abs() < 1e-9);
    }
}
