//! How much memory a training run will need, worked out before anything is allocated, so that a run
//! that cannot fit is refused with the setting to lower instead of being killed half-way.
//!
//! The estimate is deliberately on the high side: f32 weights (plus a copy of a pretrained file while it
//! loads), gradients and both AdamW moments of the parameters the run trains (all of them, those above
//! `freezeLayers`, or LoRA's adapters and the head), and for each example of a batch the activations
//! every layer keeps for the backward pass (its projections, attention scores and probabilities, the
//! feed-forward layer), doubled for the temporaries candle allocates while differentiating.

use super::bert::BertConfig;
use crate::domain::{LoraSettings, LoraTarget, TrainingSettings};

/// Memory the process needs besides the model: the runtime, the tokenizer, buffers.
const BASELINE: u64 = 256 * 1024 * 1024;
/// Every parameter: its weight, and a loaded copy of the base model's file.
const BYTES_PER_PARAMETER: u64 = 2 * 4;
/// Every trained parameter besides: its gradient and two optimizer moments.
const BYTES_PER_TRAINED_PARAMETER: u64 = 3 * 4;

/// Which of a BERT's parameters a run trains.
#[derive(Debug, Clone, Copy)]
pub enum Trained<'a> {
    All,
    /// Those above the embeddings and the first `n` layers.
    AboveFrozen(u32),
    /// LoRA adapters and the head; the base is frozen.
    Lora(&'a LoraSettings),
}

impl<'a> Trained<'a> {
    pub fn of(settings: &'a TrainingSettings) -> Self {
        match (&settings.lora, settings.hyperparameters.freeze_layers) {
            (Some(lora), _) => Self::Lora(lora),
            (None, Some(n)) => Self::AboveFrozen(n),
            (None, None) => Self::All,
        }
    }
}
/// Activations kept for the backward pass, and about as much again while it runs.
const ACTIVATION_FACTOR: u64 = 2 * 4;

/// Peak memory of a run: what does not depend on the batch, and what each example of a batch adds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryEstimate {
    pub fixed: u64,
    pub per_example: u64,
    pub batch_size: u64,
}

impl MemoryEstimate {
    pub fn bytes(&self) -> u64 {
        self.fixed
            .saturating_add(self.per_example.saturating_mul(self.batch_size))
    }

    /// The largest batch that fits in `limit` bytes (0 when the model alone does not fit).
    pub fn max_batch_within(&self, limit: u64) -> u64 {
        limit.saturating_sub(self.fixed) / self.per_example.max(1)
    }
}

/// A BERT classifier fine-tuned (or trained) at `batch_size` examples of up to `seq_len` tokens.
pub fn bert(
    config: &BertConfig,
    num_labels: usize,
    batch_size: u64,
    seq_len: u64,
    trained: Trained,
) -> MemoryEstimate {
    let h = config.hidden_size as u64;
    let i = config.intermediate_size as u64;
    let a = config.num_attention_heads as u64;
    let l = config.num_hidden_layers as u64;
    let s = seq_len.min(config.max_position_embeddings as u64).max(1);
    // Projections, residuals and norms (12h), the feed-forward layer (3i), the bias rows the linear
    // layers add and the norms' scale and shift rows (9h + i, see layers.rs), attention scores and
    // probabilities.
    let per_layer = s * (21 * h + 4 * i) + 3 * a * s * s;
    let floats = l * per_layer + 4 * s * h;
    let base = config.parameter_count(num_labels);
    let head = h * num_labels as u64 + num_labels as u64;
    let (total, trainable) = match trained {
        Trained::All => (base, base),
        Trained::AboveFrozen(n) => {
            let frozen = config
                .embedding_parameters()
                .saturating_add(config.layer_parameters().saturating_mul(l.min(n as u64)));
            (base, base.saturating_sub(frozen))
        }
        Trained::Lora(lora) => {
            let rank = lora.rank as u64;
            let per_layer: u64 = lora
                .target_modules
                .iter()
                .map(|t| {
                    let (inputs, outputs) = match t {
                        LoraTarget::Intermediate => (h, i),
                        LoraTarget::Output => (i, h),
                        _ => (h, h),
                    };
                    rank * (inputs + outputs)
                })
                .sum();
            let adapters = per_layer.saturating_mul(l);
            (base.saturating_add(adapters), adapters.saturating_add(head))
        }
    };
    MemoryEstimate {
        fixed: BASELINE
            + BYTES_PER_PARAMETER.saturating_mul(total)
            + BYTES_PER_TRAINED_PARAMETER.saturating_mul(trainable),
        per_example: ACTIVATION_FACTOR * floats,
        batch_size,
    }
}

/// The tabular MLP over `inputs` features with `hidden` layer widths.
pub fn mlp(inputs: usize, hidden: &[u32], num_labels: usize, batch_size: u64) -> MemoryEstimate {
    let mut sizes = vec![inputs as u64];
    sizes.extend(hidden.iter().map(|&h| h as u64));
    sizes.push(num_labels as u64);
    let parameters: u64 = sizes.windows(2).map(|w| w[0] * w[1] + w[1]).sum();
    MemoryEstimate {
        fixed: BASELINE + (BYTES_PER_PARAMETER + BYTES_PER_TRAINED_PARAMETER) * parameters,
        per_example: ACTIVATION_FACTOR * sizes.iter().sum::<u64>() * 2,
        batch_size,
    }
}

/// Memory a forward pass without gradients (prediction) needs for each example of `seq_len` tokens,
/// the weights aside. Only one layer's activations are alive at a time: the queries, keys and values
/// and their per-head copies, the context, the feed-forward layer before and after its GELU, the
/// residuals and norms (16h + 2i floats a token), and the attention scores and probabilities (2.5
/// matrices of `heads × s × s`); the embeddings before the first layer; doubled for the temporaries
/// the operations allocate and the allocator's slack. Measured on a `kiln serve` (16 heads, 512
/// tokens): 44–60 MiB an input against 89 MiB estimated; the MiniLM at 512 tokens: about 50 MiB
/// against 100 MiB.
pub fn bert_prediction_per_example(config: &BertConfig, seq_len: u64) -> u64 {
    let h = config.hidden_size as u64;
    let i = config.intermediate_size as u64;
    let a = config.num_attention_heads as u64;
    let s = seq_len.min(config.max_position_embeddings as u64).max(1);
    let floats = s * (16 * h + 2 * i) + 5 * a * s * s / 2;
    PREDICTION_FACTOR * floats
}

/// Bytes per float of a prediction's activations, temporaries and slack included.
const PREDICTION_FACTOR: u64 = 2 * 4;

/// Memory tokenizing a text of `chars` characters takes while its batch runs: the whole text's
/// encoding (ids, offsets, token strings) exists before it is cut to `maxSeqLength`.
pub fn tokenizing(chars: u64) -> u64 {
    TOKENIZING_PER_CHAR * chars
}

/// Bytes of a text's encoding per character (at most one token per character).
const TOKENIZING_PER_CHAR: u64 = 128;

/// Memory a forward pass of the tabular MLP needs per row (`sizes`: inputs, hidden widths, labels).
pub fn mlp_prediction_per_row(sizes: &[u64]) -> u64 {
    PREDICTION_FACTOR * 2 * sizes.iter().sum::<u64>()
}

/// Why a run does not fit in `limit` bytes, if it does not: the input field to change and what to do.
/// `model_field` names where the model's size comes from (`baseModel`, `modelConfig`).
pub fn refusal(
    estimate: &MemoryEstimate,
    limit: u64,
    model_field: &str,
) -> Option<(String, String)> {
    if estimate.bytes() <= limit {
        return None;
    }
    let needs = format!(
        "training would need about {}, more than the {} this server allows a job \
         (KILN_MAX_TRAIN_MEMORY)",
        human(estimate.bytes()),
        human(limit)
    );
    let fits = estimate.max_batch_within(limit);
    Some(if fits > 0 {
        (
            "hyperparameters.batchSize".into(),
            format!("{needs}; lower batchSize to {fits} or less (or maxSeqLength)"),
        )
    } else if estimate.fixed < limit {
        (
            "hyperparameters.maxSeqLength".into(),
            format!("{needs}; even one example per batch does not fit: lower maxSeqLength"),
        )
    } else {
        (
            model_field.into(),
            format!(
                "{needs}; the model alone needs about {}: choose a smaller one",
                human(estimate.fixed)
            ),
        )
    })
}

/// Bytes in a human unit, for messages.
pub fn human(bytes: u64) -> String {
    const GIB: f64 = 1024.0 * 1024.0 * 1024.0;
    const MIB: f64 = 1024.0 * 1024.0;
    if bytes as f64 >= GIB {
        format!("{:.1} GiB", bytes as f64 / GIB)
    } else {
        format!("{:.0} MiB", bytes as f64 / MIB)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ModelConfig;

    #[test]
    fn attention_dominates_long_sequences_and_big_batches() {
        let small = BertConfig::small(&ModelConfig::default(), 30_000, 512);
        let huge = bert(&small, 2, 4096, 512, Trained::All);
        // The attention scores alone: 4096 × 2 heads × 512² floats per layer, about 8.6 GB.
        assert!(huge.bytes() > 2 * 8_589_934_592, "{}", human(huge.bytes()));
        let modest = bert(&small, 2, 16, 128, Trained::All);
        assert!(modest.bytes() < 1 << 30, "{}", human(modest.bytes()));
        let fits = huge.max_batch_within(4 << 30);
        assert!(fits > 0 && fits < 4096, "{fits}");
        assert!(bert(&small, 2, fits, 512, Trained::All).bytes() <= 4 << 30);
    }

    #[test]
    fn the_model_alone_can_be_too_big() {
        let mut config = BertConfig::small(&ModelConfig::default(), 30_000, 512);
        config.hidden_size = 4096;
        config.intermediate_size = 16_384;
        config.num_hidden_layers = 48;
        let estimate = bert(&config, 2, 1, 8, Trained::All);
        assert_eq!(estimate.max_batch_within(1 << 30), 0);
    }

    #[test]
    fn frozen_layers_and_lora_need_no_gradients_or_moments_for_what_they_keep() {
        let mut config = BertConfig::small(&ModelConfig::default(), 30_000, 512);
        config.hidden_size = 1024;
        config.intermediate_size = 4096;
        config.num_hidden_layers = 24;
        let p = config.parameter_count(2);
        let full = bert(&config, 2, 8, 128, Trained::All);
        assert_eq!(full.fixed, BASELINE + 20 * p);
        let frozen = bert(&config, 2, 8, 128, Trained::AboveFrozen(12));
        let kept = config.embedding_parameters() + 12 * config.layer_parameters();
        assert_eq!(full.fixed - frozen.fixed, 12 * kept);
        let lora = LoraSettings::parse(
            "customization",
            &serde_json::from_value(serde_json::json!({ "method": "LORA", "rank": 8 })).unwrap(),
        )
        .unwrap()
        .unwrap();
        let adapted = bert(&config, 2, 8, 128, Trained::Lora(&lora));
        // Only the adapters and the head train: close to the weights alone.
        assert!(adapted.fixed < BASELINE + 9 * p, "{}", human(adapted.fixed));
        assert!(adapted.fixed > BASELINE + 8 * p);
        assert_eq!(adapted.per_example, full.per_example);
    }
}
