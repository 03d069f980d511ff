//! The registry's moving parts: aliases (a name such as `production` pointing to a version, or to a
//! weighted split of versions), the history of their moves, and promotion policies (rules a version
//! must pass before a guarded alias may point to it).

use serde::{Deserialize, Serialize};

use super::{EpochMetrics, FieldError};

/// An alias name: 1–64 characters of lowercase letters, digits, `_` and `-`, starting with a letter.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AliasName(String);

impl AliasName {
    pub const MAX_LEN: usize = 64;

    pub fn parse(field: &str, raw: &str) -> Result<Self, FieldError> {
        let raw = raw.trim();
        if raw.is_empty() || raw.len() > Self::MAX_LEN {
            return Err(FieldError::new(
                field,
                format!("must be 1 to {} characters", Self::MAX_LEN),
            ));
        }
        if !raw.starts_with(|c: char| c.is_ascii_lowercase())
            || !raw
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
        {
            return Err(FieldError::new(
                field,
                "must start with a lowercase letter and hold only lowercase letters, digits, `_` and `-`",
            ));
        }
        Ok(Self(raw.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// One arm of a split alias: a version and its share of the requests (weights need not sum to 1;
/// each arm gets `weight / sum`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SplitArm {
    pub version: i64,
    pub weight: f64,
}

/// What an alias points to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum AliasTarget {
    Version(i64),
    /// Two to [`AliasTarget::MAX_ARMS`] distinct versions with positive weights.
    Split(Vec<SplitArm>),
}

impl AliasTarget {
    pub const MAX_ARMS: usize = 4;
    /// The largest weight of an arm: weights add up without overflowing.
    pub const MAX_WEIGHT: f64 = 1e6;

    /// A single version, or a split checked for distinct versions and weights in (0, [`MAX_WEIGHT`]].
    ///
    /// [`MAX_WEIGHT`]: AliasTarget::MAX_WEIGHT
    pub fn parse(version: Option<i64>, split: Option<Vec<SplitArm>>) -> Result<Self, FieldError> {
        match (version, split) {
            (Some(version), None) => Ok(Self::Version(version)),
            (None, Some(arms)) => {
                if arms.len() < 2 || arms.len() > Self::MAX_ARMS {
                    return Err(FieldError::new(
                        "split",
                        format!(
                            "must hold 2 to {} versions (got {}); for one version give `version`",
                            Self::MAX_ARMS,
                            arms.len()
                        ),
                    ));
                }
                for (i, arm) in arms.iter().enumerate() {
                    if !(arm.weight > 0.0 && arm.weight <= Self::MAX_WEIGHT) {
                        return Err(FieldError::new(
                            format!("split[{i}].weight"),
                            format!(
                                "must be a number greater than 0 and at most {:e} (got {})",
                                Self::MAX_WEIGHT,
                                arm.weight
                            ),
                        ));
                    }
                    if arms[..i].iter().any(|a| a.version == arm.version) {
                        return Err(FieldError::new(
                            format!("split[{i}].version"),
                            format!("version {} is listed twice", arm.version),
                        ));
                    }
                }
                Ok(Self::Split(arms))
            }
            (Some(_), Some(_)) => Err(FieldError::new(
                "split",
                "give either `version` or `split`, not both",
            )),
            (None, None) => Err(FieldError::new(
                "version",
                "give the version the alias points to (or `split`)",
            )),
        }
    }

    /// Every version it names, in order.
    pub fn versions(&self) -> Vec<i64> {
        match self {
            Self::Version(v) => vec![*v],
            Self::Split(arms) => arms.iter().map(|a| a.version).collect(),
        }
    }

    /// The version that stands for the alias when a rule compares with `current`: the version itself,
    /// or the split's heaviest arm (the first of equals).
    pub fn primary(&self) -> i64 {
        match self {
            Self::Version(v) => *v,
            Self::Split(arms) => {
                arms.iter()
                    .fold(
                        arms[0],
                        |best, a| if a.weight > best.weight { *a } else { best },
                    )
                    .version
            }
        }
    }

    /// The version that answers a request whose routing number is `u` in `[0, 1)`.
    pub fn route(&self, u: f64) -> i64 {
        match self {
            Self::Version(v) => *v,
            Self::Split(arms) => {
                let total: f64 = arms.iter().map(|a| a.weight).sum();
                let mut acc = 0.0;
                for arm in arms {
                    acc += arm.weight / total;
                    if u < acc {
                        return arm.version;
                    }
                }
                arms[arms.len() - 1].version
            }
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("an alias target serializes")
    }
}

/// An alias of a model.
#[derive(Debug, Clone)]
pub struct ModelAlias {
    pub model_name: String,
    pub alias: String,
    pub target: AliasTarget,
    pub updated_at: i64,
}

/// How many `predict` calls (and inputs) a version answered through an alias.
#[derive(Debug, Clone)]
pub struct AliasRequests {
    pub alias: String,
    pub version: i64,
    pub requests: i64,
    pub predictions: i64,
}

/// One move of an alias, as the history keeps it.
#[derive(Debug, Clone)]
pub struct AliasChange {
    pub model_name: String,
    pub alias: String,
    /// `None`: the alias did not exist before.
    pub from: Option<AliasTarget>,
    /// `None`: the alias was deleted.
    pub to: Option<AliasTarget>,
    /// The name of the token that moved it, or `job <id>` for a job's automatic promotion.
    pub actor: String,
    pub reason: Option<String>,
    /// Rules of the alias's promotion policy that the move overrode (`force`); empty when none failed.
    pub overridden_rules: Vec<String>,
    /// Whether this move was a rollback.
    pub rollback: bool,
    pub at: i64,
}

impl AliasChange {
    /// Where a rollback of the alias goes, given its history newest first: the version it pointed to
    /// before its latest move that no rollback has undone yet (repeated rollbacks walk further back).
    pub fn rollback_target(history: &[AliasChange]) -> Option<AliasTarget> {
        let mut undone = 0usize;
        for change in history {
            if change.rollback {
                undone += 1;
            } else if undone > 0 {
                undone -= 1;
            } else {
                return change.from.clone();
            }
        }
        None
    }
}

/// A promotion policy: rules every version must pass before the alias may point to it.
#[derive(Debug, Clone)]
pub struct PromotionPolicy {
    pub model_name: String,
    pub alias: String,
    pub rules: Vec<Rule>,
    pub updated_at: i64,
}

/// A metric a rule reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleMetric {
    Accuracy,
    Precision,
    Recall,
    F1,
    ValLoss,
    TrainLoss,
}

impl RuleMetric {
    const NAMES: &[(&str, RuleMetric)] = &[
        ("accuracy", Self::Accuracy),
        ("precision", Self::Precision),
        ("recall", Self::Recall),
        ("f1", Self::F1),
        ("val_loss", Self::ValLoss),
        ("valLoss", Self::ValLoss),
        ("train_loss", Self::TrainLoss),
        ("trainLoss", Self::TrainLoss),
    ];

    fn per_label(self) -> bool {
        matches!(self, Self::Precision | Self::Recall | Self::F1)
    }

    fn read(self, metrics: &EpochMetrics, label: Option<&str>) -> Option<f64> {
        if let Some(label) = label {
            let l = metrics.per_label.iter().find(|l| l.label == label)?;
            return Some(match self {
                Self::Precision => l.precision,
                Self::Recall => l.recall,
                _ => l.f1,
            });
        }
        Some(match self {
            Self::Accuracy => metrics.accuracy,
            Self::Precision => metrics.precision,
            Self::Recall => metrics.recall,
            Self::F1 => metrics.f1,
            Self::ValLoss => metrics.val_loss,
            Self::TrainLoss => metrics.train_loss,
        })
    }
}

/// Every overall metric, then each label's precision, recall and F1 (labels in order of first
/// appearance), read from each of `versions`: names as the API writes them (`valLoss`,
/// `recall[injection]`) and one value per version (`None`: that version lacks the label).
pub fn metric_table(versions: &[&EpochMetrics]) -> Vec<(String, Vec<Option<f64>>)> {
    use RuleMetric::*;
    let overall = [
        ("accuracy", Accuracy),
        ("precision", Precision),
        ("recall", Recall),
        ("f1", F1),
        ("valLoss", ValLoss),
        ("trainLoss", TrainLoss),
    ];
    let mut rows: Vec<(String, Vec<Option<f64>>)> = overall
        .iter()
        .map(|(name, m)| {
            (
                name.to_string(),
                versions.iter().map(|v| m.read(v, None)).collect(),
            )
        })
        .collect();
    let mut labels: Vec<&str> = Vec::new();
    for l in versions.iter().flat_map(|v| &v.per_label) {
        if !labels.contains(&l.label.as_str()) {
            labels.push(&l.label);
        }
    }
    for label in labels {
        for (name, m) in [("precision", Precision), ("recall", Recall), ("f1", F1)] {
            let values = versions.iter().map(|v| m.read(v, Some(label))).collect();
            rows.push((format!("{name}[{label}]"), values));
        }
    }
    rows
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparison {
    AtLeast,
    Above,
    AtMost,
    Below,
}

impl Comparison {
    fn holds(self, left: f64, right: f64) -> bool {
        match self {
            Self::AtLeast => left >= right,
            Self::Above => left > right,
            Self::AtMost => left <= right,
            Self::Below => left < right,
        }
    }
}

/// The right-hand side of a rule: a number, or the same metric of the version the alias points to
/// now plus an offset.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Threshold {
    Number(f64),
    Current(f64),
}

/// One parsed rule, such as `f1 >= current - 0.01` or `recall[injection] >= 0.98`.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub text: String,
    pub metric: RuleMetric,
    pub label: Option<String>,
    pub comparison: Comparison,
    pub threshold: Threshold,
}

/// Why a version failed a rule, or that it passed.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Pass,
    Fail(String),
}

impl Rule {
    /// The most rules one policy holds, and the longest rule.
    pub const MAX_RULES: usize = 20;
    pub const MAX_CHARS: usize = 200;

    /// Parses every rule of a policy; a bad one is refused with its index and the character where the
    /// problem is.
    pub fn parse_all(field: &str, rules: &[String]) -> Result<Vec<Rule>, FieldError> {
        if rules.len() > Self::MAX_RULES {
            return Err(FieldError::new(
                field,
                format!("at most {} rules (got {})", Self::MAX_RULES, rules.len()),
            ));
        }
        rules
            .iter()
            .enumerate()
            .map(|(i, r)| Self::parse(r).map_err(|m| FieldError::new(format!("{field}[{i}]"), m)))
            .collect()
    }

    /// One rule: `METRIC[LABEL]? OP (NUMBER | current ((+|-) NUMBER)?)`. Metrics: accuracy, precision,
    /// recall, f1, val_loss, train_loss (per label: precision, recall, f1); OP: `>=`, `>`, `<=`, `<`.
    pub fn parse(raw: &str) -> Result<Rule, String> {
        let text = raw.trim();
        if text.chars().count() > Self::MAX_CHARS {
            return Err(format!("must be at most {} characters", Self::MAX_CHARS));
        }
        let mut p = Cursor { s: raw, at: 0 };
        p.skip_space();
        let name = p.take_while(|c| c.is_ascii_alphanumeric() || c == '_');
        let metric = RuleMetric::NAMES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, m)| *m)
            .ok_or_else(|| {
                p.error_before(
                    name.len(),
                    if name.is_empty() {
                        "expected a metric (accuracy, precision, recall, f1, val_loss, train_loss)"
                            .to_string()
                    } else {
                        format!(
                            "unknown metric `{}`; use accuracy, precision, recall, f1, val_loss or train_loss",
                            super::abbreviate(name, 40)
                        )
                    },
                )
            })?;
        let mut label = None;
        if p.eat("[") {
            if !metric.per_label() {
                return Err(
                    p.error_before(1, "only precision, recall and f1 have per-label values")
                );
            }
            let l = p.take_while(|c| c != ']');
            if l.trim().is_empty() {
                return Err(p.error("expected a label name inside `[…]`"));
            }
            if l.chars().any(char::is_control) {
                return Err(p.error_before(
                    l.len(),
                    "a label name holds no control characters (newlines, NUL, …)",
                ));
            }
            if !p.eat("]") {
                return Err(p.error("expected `]` after the label"));
            }
            label = Some(l.trim().to_string());
        }
        p.skip_space();
        let comparison = if p.eat(">=") {
            Comparison::AtLeast
        } else if p.eat("<=") {
            Comparison::AtMost
        } else if p.eat(">") {
            Comparison::Above
        } else if p.eat("<") {
            Comparison::Below
        } else {
            return Err(p.error("expected one of >=, >, <=, <"));
        };
        p.skip_space();
        let threshold = if p.eat("current") {
            p.skip_space();
            let sign = if p.eat("+") {
                1.0
            } else if p.eat("-") {
                -1.0
            } else {
                0.0
            };
            if sign == 0.0 {
                Threshold::Current(0.0)
            } else {
                p.skip_space();
                Threshold::Current(sign * p.number()?)
            }
        } else {
            Threshold::Number(p.number()?)
        };
        p.skip_space();
        if p.at < raw.len() {
            return Err(p.error("unexpected text after the rule"));
        }
        Ok(Rule {
            text: text.to_string(),
            metric,
            label,
            comparison,
            threshold,
        })
    }

    /// Checks `candidate` against this rule; `current` is the metrics of the version the alias points to
    /// now. A rule against `current` fails closed: when the alias points to no version (or that
    /// version has no such label), there is nothing to compare with and only an admin's force moves it.
    pub fn check(&self, candidate: &EpochMetrics, current: Option<&EpochMetrics>) -> Verdict {
        let label = self.label.as_deref();
        let Some(value) = self.metric.read(candidate, label) else {
            return Verdict::Fail(format!(
                "{}: the version has no label `{}`",
                self.text,
                label.unwrap_or_default()
            ));
        };
        let bound = match self.threshold {
            Threshold::Number(n) => n,
            Threshold::Current(offset) => {
                let Some(current) = current else {
                    return Verdict::Fail(format!(
                        "{}: the alias points to no version, so there is nothing to compare with",
                        self.text
                    ));
                };
                match self.metric.read(current, label) {
                    Some(c) => c + offset,
                    None => {
                        return Verdict::Fail(format!(
                            "{}: the current version has no label `{}` to compare with",
                            self.text,
                            label.unwrap_or_default()
                        ));
                    }
                }
            }
        };
        if self.comparison.holds(value, bound) {
            Verdict::Pass
        } else {
            Verdict::Fail(format!(
                "{} (got {}, needed {})",
                self.text,
                significant(value),
                significant(bound)
            ))
        }
    }
}

/// A metric in a refusal: 4 significant digits (0.8800, 12.35), in scientific notation when very small
/// or very large (1.000e-6), so that a threshold never reads as 0.0000.
fn significant(x: f64) -> String {
    if x == 0.0 || !x.is_finite() {
        return x.to_string();
    }
    let magnitude = x.abs().log10().floor() as i32;
    if !(-3..6).contains(&magnitude) {
        format!("{x:.3e}")
    } else {
        format!("{x:.*}", (3 - magnitude).max(0) as usize)
    }
}

/// A tiny scanner over one rule, reporting positions 1-based in characters.
struct Cursor<'a> {
    s: &'a str,
    at: usize,
}

impl<'a> Cursor<'a> {
    fn rest(&self) -> &'a str {
        &self.s[self.at..]
    }

    fn skip_space(&mut self) {
        let n = self.rest().len() - self.rest().trim_start().len();
        self.at += n;
    }

    fn eat(&mut self, token: &str) -> bool {
        if self.rest().starts_with(token) {
            self.at += token.len();
            true
        } else {
            false
        }
    }

    fn take_while(&mut self, keep: impl Fn(char) -> bool) -> &'a str {
        let start = self.at;
        let n = self
            .rest()
            .char_indices()
            .find(|&(_, c)| !keep(c))
            .map_or(self.rest().len(), |(i, _)| i);
        self.at += n;
        &self.s[start..self.at]
    }

    /// A number as JSON writes one: an optional `-`, digits, optionally `.` and digits, optionally an
    /// exponent (`e`, an optional sign, digits); finite.
    fn number(&mut self) -> Result<f64, String> {
        let bytes = self.rest().as_bytes();
        let digits_from = |mut i: usize| {
            while bytes.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
            i
        };
        let mut end = usize::from(bytes.first() == Some(&b'-'));
        let whole = digits_from(end);
        let mut ok = whole > end;
        end = whole;
        if ok && bytes.get(end) == Some(&b'.') {
            let fraction = digits_from(end + 1);
            ok = fraction > end + 1;
            end = fraction;
        }
        if ok && matches!(bytes.get(end), Some(b'e' | b'E')) {
            let mut at = end + 1;
            if matches!(bytes.get(at), Some(b'+' | b'-')) {
                at += 1;
            }
            let exponent = digits_from(at);
            ok = exponent > at;
            end = exponent;
        }
        let parsed = self.rest()[..end]
            .parse::<f64>()
            .ok()
            .filter(|n| n.is_finite());
        match parsed {
            Some(n) if ok => {
                self.at += end;
                Ok(n)
            }
            _ => Err(self.error(
                "expected a number written as in JSON (such as 0.95, -1 or 1e-5) or `current`",
            )),
        }
    }

    fn error(&self, message: impl std::fmt::Display) -> String {
        self.error_before(0, message)
    }

    fn error_before(&self, back: usize, message: impl std::fmt::Display) -> String {
        let column = self.s[..self.at - back].chars().count() + 1;
        format!("at character {column}: {message}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::LabelMetrics;

    fn metrics(f1: f64, recall_injection: f64) -> EpochMetrics {
        EpochMetrics {
            epoch: 1,
            train_loss: 0.2,
            val_loss: 0.3,
            accuracy: 0.96,
            precision: 0.9,
            recall: 0.9,
            f1,
            per_label: vec![LabelMetrics {
                label: "injection".into(),
                precision: 0.9,
                recall: recall_injection,
                f1: 0.9,
                support: 10,
            }],
            confusion_matrix: vec![],
        }
    }

    #[test]
    fn rules_parse_in_the_forms_the_docs_give() {
        let r = Rule::parse("accuracy >= 0.95").unwrap();
        assert_eq!(
            (r.metric, r.comparison, r.threshold),
            (
                RuleMetric::Accuracy,
                Comparison::AtLeast,
                Threshold::Number(0.95)
            )
        );
        let r = Rule::parse("  f1>=current - 0.01 ").unwrap();
        assert_eq!(r.threshold, Threshold::Current(-0.01));
        assert_eq!(r.text, "f1>=current - 0.01");
        let r = Rule::parse("recall[injection] >= 0.98").unwrap();
        assert_eq!(r.label.as_deref(), Some("injection"));
        assert_eq!(
            Rule::parse("val_loss < current").unwrap().threshold,
            Threshold::Current(0.0)
        );
        for (rule, threshold) in [
            ("val_loss <= 1e-5", Threshold::Number(1e-5)),
            ("val_loss <= -1", Threshold::Number(-1.0)),
            ("accuracy >= 0.95", Threshold::Number(0.95)),
            ("accuracy >= 1E2", Threshold::Number(100.0)),
            ("val_loss <= current - 0.5", Threshold::Current(-0.5)),
            ("val_loss <= current + 2.5e-1", Threshold::Current(0.25)),
        ] {
            assert_eq!(Rule::parse(rule).unwrap().threshold, threshold, "{rule}");
        }
    }

    #[test]
    fn a_malformed_rule_says_where() {
        for (rule, expected) in [
            ("acuracy >= 0.9", "at character 1: unknown metric `acuracy`"),
            (
                "accuracy => 0.9",
                "at character 10: expected one of >=, >, <=, <",
            ),
            ("accuracy >= high", "at character 13: expected a number"),
            ("accuracy >= .5", "at character 13: expected a number"),
            ("accuracy >= 5.", "at character 13: expected a number"),
            ("accuracy >= 1e", "at character 13: expected a number"),
            ("accuracy >= 1e999", "at character 13: expected a number"),
            ("accuracy >= 0.5x", "at character 16: unexpected text"),
            (
                "recall[a\nb] >= 0.5",
                "at character 8: a label name holds no control",
            ),
            (
                "recall[a\u{0}b] >= 0.5",
                "at character 8: a label name holds no control",
            ),
            ("f1 >= current * 2", "at character 15: unexpected text"),
            (
                "accuracy[spam] > 0.5",
                "at character 9: only precision, recall and f1",
            ),
            ("recall[spam >= 0.5", "at character 19: expected `]`"),
            ("", "at character 1: expected a metric"),
        ] {
            let error = Rule::parse(rule).unwrap_err();
            assert!(error.starts_with(expected), "{rule:?}: {error}");
        }
        let error = Rule::parse_all("rules", &["f1 >= 0.5".into(), "f1 >=".into()]).unwrap_err();
        assert_eq!(error.field, "rules[1]");
    }

    #[test]
    fn rules_compare_with_numbers_and_the_current_version() {
        let rule = Rule::parse("f1 >= current - 0.01").unwrap();
        assert_eq!(
            rule.check(&metrics(0.90, 1.0), Some(&metrics(0.905, 1.0))),
            Verdict::Pass
        );
        assert!(matches!(
            rule.check(&metrics(0.88, 1.0), Some(&metrics(0.9, 1.0))),
            Verdict::Fail(m) if m.contains("got 0.8800, needed 0.8900")
        ));
        assert!(
            matches!(rule.check(&metrics(0.99, 1.0), None), Verdict::Fail(m) if m.contains("nothing to compare with")),
            "a rule against current fails closed without a current version"
        );
        let rule = Rule::parse("val_loss < 0.000001").unwrap();
        assert!(matches!(
            rule.check(&metrics(0.9, 1.0), None),
            Verdict::Fail(m) if m.contains("needed 1.000e-6")
        ));
        let rule = Rule::parse("recall[injection] >= 0.98").unwrap();
        assert!(matches!(
            rule.check(&metrics(0.9, 0.97), None),
            Verdict::Fail(_)
        ));
        let rule = Rule::parse("recall[spam] >= 0.5").unwrap();
        assert!(
            matches!(rule.check(&metrics(0.9, 0.97), None), Verdict::Fail(m) if m.contains("no label `spam`"))
        );
    }

    #[test]
    fn rollback_walks_back_one_undone_move_at_a_time() {
        let change = |from: Option<i64>, to: i64, rollback| AliasChange {
            model_name: "m".into(),
            alias: "production".into(),
            from: from.map(AliasTarget::Version),
            to: Some(AliasTarget::Version(to)),
            actor: "a".into(),
            reason: None,
            overridden_rules: vec![],
            rollback,
            at: 0,
        };
        // 1 → 2 → 3, newest first.
        let mut history = vec![
            change(Some(2), 3, false),
            change(Some(1), 2, false),
            change(None, 1, false),
        ];
        assert_eq!(
            AliasChange::rollback_target(&history),
            Some(AliasTarget::Version(2))
        );
        history.insert(0, change(Some(3), 2, true));
        assert_eq!(
            AliasChange::rollback_target(&history),
            Some(AliasTarget::Version(1))
        );
        history.insert(0, change(Some(2), 1, true));
        assert_eq!(
            AliasChange::rollback_target(&history),
            None,
            "the first version has nothing before it"
        );
    }

    #[test]
    fn splits_route_by_weight_and_are_checked() {
        let split = AliasTarget::parse(
            None,
            Some(vec![
                SplitArm {
                    version: 1,
                    weight: 3.0,
                },
                SplitArm {
                    version: 2,
                    weight: 1.0,
                },
            ]),
        )
        .unwrap();
        assert_eq!(split.route(0.0), 1);
        assert_eq!(split.route(0.74), 1);
        assert_eq!(split.route(0.76), 2);
        assert_eq!(split.primary(), 1);
        assert_eq!(
            split.to_json(),
            r#"{"split":[{"version":1,"weight":3.0},{"version":2,"weight":1.0}]}"#
        );
        assert_eq!(AliasTarget::Version(3).to_json(), r#"{"version":3}"#);
        let twice = AliasTarget::parse(
            None,
            Some(vec![
                SplitArm {
                    version: 1,
                    weight: 1.0,
                },
                SplitArm {
                    version: 1,
                    weight: 1.0,
                },
            ]),
        );
        assert_eq!(twice.unwrap_err().field, "split[1].version");
        let arms = |w: f64| {
            Some(vec![
                SplitArm {
                    version: 1,
                    weight: w,
                },
                SplitArm {
                    version: 2,
                    weight: w,
                },
            ])
        };
        for weight in [1e308, f64::INFINITY, f64::NAN, 0.0, -1.0, 1e6 + 1.0] {
            let refused = AliasTarget::parse(None, arms(weight)).unwrap_err();
            assert_eq!(refused.field, "split[0].weight", "{weight}");
        }
        let even = AliasTarget::parse(None, arms(1e6)).unwrap();
        assert_eq!(even.route(0.49), 1);
        assert_eq!(even.route(0.51), 2);
        assert!(AliasName::parse("alias", "Production").is_err());
        assert!(AliasName::parse("alias", "canary-2").is_ok());
    }
}
