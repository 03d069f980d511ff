//! Rows generated from templates: `generateSyntheticDataset`.

use std::io::Write;

use rand::Rng;
use rand::seq::{IndexedRandom, SliceRandom};

use super::draw_rng;
use crate::domain::{Piece, SyntheticSpec};

/// Writes `spec`'s rows to `out` as JSONL lines `{"text": …, "label": …}`: exactly each label's
/// count, in a shuffled order, each row from one of its label's templates (chosen evenly) with each
/// slot filled by one of its values (chosen evenly). The same spec gives the same bytes. Returns the
/// number of rows.
pub fn synthesize(spec: &SyntheticSpec, out: &mut impl Write) -> std::io::Result<u64> {
    let mut rng = draw_rng(spec.seed, u64::MAX, 0);
    let by_label: Vec<Vec<usize>> = spec
        .labels
        .iter()
        .map(|(label, _)| {
            (0..spec.templates.len())
                .filter(|&t| spec.templates[t].label == *label)
                .collect()
        })
        .collect();
    let mut order: Vec<u32> = spec
        .labels
        .iter()
        .enumerate()
        .flat_map(|(i, (_, n))| std::iter::repeat_n(i as u32, *n as usize))
        .collect();
    order.shuffle(&mut rng);
    let mut text = String::new();
    for &label in &order {
        let template = &spec.templates[*by_label[label as usize]
            .choose(&mut rng)
            .expect("every label has a template")];
        text.clear();
        for piece in &template.pieces {
            match piece {
                Piece::Text(t) => text.push_str(t),
                Piece::Slot(s) => {
                    let values = &spec.slots[*s].1;
                    text.push_str(&values[rng.random_range(0..values.len())]);
                }
            }
        }
        serde_json::to_writer(
            &mut *out,
            &serde_json::json!({ "text": text, "label": template.label }),
        )?;
        out.write_all(b"\n")?;
    }
    Ok(order.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{SlotInput, SyntheticInput, TemplateInput};

    #[test]
    fn rows_follow_the_templates_and_the_distribution_exactly() {
        let spec = SyntheticSpec::parse(&SyntheticInput {
            name: "s".into(),
            templates: vec![
                TemplateInput {
                    template: "ignore {what}".into(),
                    label: "injection".into(),
                },
                TemplateInput {
                    template: "summarize {what}".into(),
                    label: "benign".into(),
                },
            ],
            slots: vec![SlotInput {
                name: "what".into(),
                values: vec!["the rules".into(), "this page".into()],
            }],
            rows: 9,
            label_distribution: None,
            seed: Some(3),
        })
        .unwrap();
        let mut a = Vec::new();
        assert_eq!(synthesize(&spec, &mut a).unwrap(), 9);
        let mut b = Vec::new();
        synthesize(&spec, &mut b).unwrap();
        assert_eq!(a, b);
        let rows: Vec<serde_json::Value> = String::from_utf8(a)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let injections = rows.iter().filter(|r| r["label"] == "injection").count();
        // 4.5 each: the remainder goes to the first label in order, "benign".
        assert_eq!(injections, 4);
        for r in &rows {
            let text = r["text"].as_str().unwrap();
            let start = if r["label"] == "injection" {
                "ignore "
            } else {
                "summarize "
            };
            assert!(text.starts_with(start), "{text}");
            assert!(text.ends_with("the rules") || text.ends_with("this page"));
        }
    }
}
