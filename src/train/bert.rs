//! kiln's own BERT encoder, written so that every weight receives a gradient.
//!
//! `candle-transformers`' BERT uses candle-nn's fused layer norm, which has no backward pass: nothing
//! below the head would learn. This encoder uses the differentiable `layer_norm_slow`, composed softmax
//! and GELU, and HuggingFace's tensor names (`bert.embeddings.word_embeddings.weight`, …), so pretrained
//! weights load and a trained model loads back in Python `transformers` as `BertForSequenceClassification`
//! (kiln pools by the attention-masked mean of the last hidden states; `kiln.json` records it).

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result, bail};
use candle_core::{DType, Tensor};
use candle_nn::{Embedding, Module};
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};

use super::attention::attention;
use super::layers::{Adapter, LayerNorm, Linear, gelu, linear};
use super::params::{MAX_PARAMETERS, Params, dropout};
use crate::domain::{LoraSettings, LoraTarget, ModelConfig, Pooling, UserError};

/// The `model_type` of an exported classifier that needs kiln's own classes in `modeling_kiln.py`.
pub const KILN_MODEL_TYPE: &str = "kiln-bert";
/// The largest `config.json` read.
pub const MAX_CONFIG_BYTES: u64 = 1024 * 1024;
/// The largest value of each size in a `config.json`, in the order [`BertConfig::check_limits`] reads
/// them: vocabulary, hidden size, layers, attention heads, intermediate size, positions, token types.
pub const LIMITS: [(&str, usize); 7] = [
    ("vocab_size", 300_000),
    ("hidden_size", 4096),
    ("num_hidden_layers", 48),
    ("num_attention_heads", 64),
    ("intermediate_size", 16_384),
    ("max_position_embeddings", 8192),
    ("type_vocab_size", 16),
];

/// The fields of a HuggingFace BERT `config.json` that kiln reads; other fields are kept as they were.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    #[serde(default = "default_max_positions")]
    pub max_position_embeddings: usize,
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "default_dropout")]
    pub hidden_dropout_prob: f64,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

fn default_max_positions() -> usize {
    512
}
fn default_type_vocab() -> usize {
    2
}
fn default_eps() -> f64 {
    1e-12
}
fn default_dropout() -> f64 {
    0.1
}
fn default_act() -> String {
    "gelu".into()
}

impl BertConfig {
    /// Reads a HuggingFace `config.json`. A file that is not a BERT configuration kiln supports, or
    /// whose sizes are beyond [`LIMITS`], is a `UserError` saying which field is wrong (the path is left
    /// to the log); nothing is allocated for the model before that check.
    pub fn read(path: &Path) -> Result<Self> {
        let size = std::fs::metadata(path)
            .with_context(|| format!("reading {}", path.display()))?
            .len();
        if size > MAX_CONFIG_BYTES {
            bail!(UserError::new(format!(
                "the base model's config.json is {size} bytes, more than the {MAX_CONFIG_BYTES} a \
                 configuration can take"
            )));
        }
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Self::parse(&text)
    }

    /// [`BertConfig::read`] from the file's text.
    pub fn parse(text: &str) -> Result<Self> {
        let config: Self = serde_json::from_str(text).map_err(|e| {
            UserError::new(format!(
                "the base model's config.json is not a BERT configuration kiln can read: {e}"
            ))
        })?;
        if config.num_attention_heads == 0
            || !config
                .hidden_size
                .is_multiple_of(config.num_attention_heads)
        {
            bail!(UserError::new(format!(
                "the base model's config.json has hidden_size {}, which is not a multiple of \
                 num_attention_heads {}",
                config.hidden_size, config.num_attention_heads
            )));
        }
        if !matches!(config.hidden_act.as_str(), "gelu" | "gelu_new" | "relu") {
            bail!(UserError::new(format!(
                "the base model's config.json has hidden_act {:?}, which kiln does not support \
                 (gelu, gelu_new, relu)",
                config.hidden_act
            )));
        }
        config.check_limits()?;
        Ok(config)
    }

    /// Refuses sizes beyond [`LIMITS`] and models of more than [`MAX_PARAMETERS`] parameters.
    pub fn check_limits(&self) -> Result<()> {
        let values = [
            self.vocab_size,
            self.hidden_size,
            self.num_hidden_layers,
            self.num_attention_heads,
            self.intermediate_size,
            self.max_position_embeddings,
            self.type_vocab_size,
        ];
        for ((name, limit), value) in LIMITS.into_iter().zip(values) {
            if value == 0 || value > limit {
                bail!(UserError::new(format!(
                    "the base model's config.json has {name} {value}; kiln accepts 1 to {limit}"
                )));
            }
        }
        let parameters = self.parameter_count(2);
        if parameters > MAX_PARAMETERS {
            bail!(UserError::new(format!(
                "the base model has {parameters} parameters; kiln trains at most {MAX_PARAMETERS}"
            )));
        }
        Ok(())
    }

    /// Parameters of the encoder with a head of `num_labels` outputs (saturating, so a hostile config
    /// cannot overflow it).
    pub fn parameter_count(&self, num_labels: usize) -> u64 {
        let h = self.hidden_size as u64;
        self.embedding_parameters()
            .saturating_add(
                self.layer_parameters()
                    .saturating_mul(self.num_hidden_layers as u64),
            )
            .saturating_add(h * num_labels as u64 + num_labels as u64)
    }

    /// Parameters of the embeddings and their norm.
    pub fn embedding_parameters(&self) -> u64 {
        let h = self.hidden_size as u64;
        (self.vocab_size as u64)
            .saturating_add(self.max_position_embeddings as u64)
            .saturating_add(self.type_vocab_size as u64)
            .saturating_mul(h)
            .saturating_add(2 * h)
    }

    /// Parameters of one encoder layer.
    pub fn layer_parameters(&self) -> u64 {
        let h = self.hidden_size as u64;
        let i = self.intermediate_size as u64;
        (4 * h * h + 4 * h)
            .saturating_add(2 * h * i)
            .saturating_add(i + h)
            .saturating_add(4 * h)
    }

    /// A small config for a model trained from random weights.
    pub fn small(size: &ModelConfig, vocab_size: usize, max_positions: usize) -> Self {
        Self {
            vocab_size,
            hidden_size: size.hidden_size as usize,
            num_hidden_layers: size.num_layers as usize,
            num_attention_heads: size.num_heads as usize,
            intermediate_size: size.intermediate_size as usize,
            max_position_embeddings: max_positions,
            type_vocab_size: 2,
            layer_norm_eps: 1e-12,
            hidden_dropout_prob: 0.1,
            hidden_act: "gelu".into(),
            extra: serde_json::Map::new(),
        }
    }

    /// The config of the trained classifier. When `transformers`' own `BertForSequenceClassification`
    /// computes what kiln does (CLS pooling, adapters merged) it names that class; otherwise it names
    /// kiln's classes in `modeling_kiln.py` through `auto_map`, so that loading it without
    /// `trust_remote_code=True` fails instead of giving other logits.
    pub fn for_classifier(
        &self,
        labels: &[String],
        pooling: Pooling,
        separate_adapters: bool,
    ) -> serde_json::Value {
        let mut value = serde_json::to_value(self).expect("config serialises");
        let obj = value.as_object_mut().expect("config is an object");
        // What an earlier kiln export of a base model said about itself.
        for key in ["auto_map", "pooling", "separate_adapters"] {
            obj.remove(key);
        }
        if pooling == Pooling::Cls && !separate_adapters {
            obj.insert("model_type".into(), "bert".into());
            obj.insert(
                "architectures".into(),
                serde_json::json!(["BertForSequenceClassification"]),
            );
        } else {
            obj.insert("model_type".into(), KILN_MODEL_TYPE.into());
            obj.insert(
                "architectures".into(),
                serde_json::json!(["KilnBertForSequenceClassification"]),
            );
            obj.insert(
                "auto_map".into(),
                serde_json::json!({
                    "AutoConfig": "modeling_kiln.KilnBertConfig",
                    "AutoModelForSequenceClassification": "modeling_kiln.KilnBertForSequenceClassification",
                }),
            );
            obj.insert(
                "pooling".into(),
                serde_json::to_value(pooling).expect("pooling serialises"),
            );
            obj.insert("separate_adapters".into(), separate_adapters.into());
        }
        obj.insert("num_labels".into(), labels.len().into());
        let id2label: serde_json::Map<_, _> = labels
            .iter()
            .enumerate()
            .map(|(i, l)| (i.to_string(), serde_json::Value::from(l.clone())))
            .collect();
        let label2id: serde_json::Map<_, _> = labels
            .iter()
            .enumerate()
            .map(|(i, l)| (l.clone(), serde_json::Value::from(i)))
            .collect();
        obj.insert("id2label".into(), id2label.into());
        obj.insert("label2id".into(), label2id.into());
        value
    }
}

struct Layer {
    query: Linear,
    key: Linear,
    value: Linear,
    attn_out: Linear,
    attn_norm: LayerNorm,
    intermediate: Linear,
    output: Linear,
    out_norm: LayerNorm,
}

/// Choices a run makes about the network beyond its `config.json`.
#[derive(Debug, Clone, Default)]
pub struct BertOptions {
    /// Overrides the config's `hidden_dropout_prob`.
    pub dropout: Option<f64>,
    pub pooling: Pooling,
    pub lora: Option<LoraSettings>,
}

/// The name of a LoRA matrix (`A` or `B`) of `module` in encoder layer `layer`: PEFT's key without its
/// `base_model.model.` prefix, under `lora.` so that loading the base model does not look for it.
pub fn lora_name(layer: usize, module: &str, matrix: char) -> String {
    format!("{LORA_PREFIX}bert.encoder.layer.{layer}.{module}.lora_{matrix}.weight")
}

/// What every LoRA parameter's name starts with.
pub const LORA_PREFIX: &str = "lora.";

/// BERT encoder plus a linear classification head over the pooled hidden states.
pub struct BertClassifier {
    pub config: BertConfig,
    word: Embedding,
    position: Embedding,
    token_type: Embedding,
    emb_norm: LayerNorm,
    layers: Vec<Layer>,
    classifier: Linear,
    /// `bert.pooler.dense`, with CLS pooling.
    pooler: Option<Linear>,
    heads: usize,
    head_dim: usize,
    dropout: f32,
    relu: bool,
}

impl Layer {
    fn module(&mut self, target: LoraTarget) -> &mut Linear {
        match target {
            LoraTarget::Query => &mut self.query,
            LoraTarget::Key => &mut self.key,
            LoraTarget::Value => &mut self.value,
            LoraTarget::AttentionOutput => &mut self.attn_out,
            LoraTarget::Intermediate => &mut self.intermediate,
            LoraTarget::Output => &mut self.output,
        }
    }
}

/// The pooler's name (HuggingFace's), with CLS pooling.
pub const POOLER: &str = "bert.pooler.dense";

/// Initialiser spread of HF BERT (`initializer_range`).
const INIT_STD: f32 = 0.02;

impl BertClassifier {
    /// Every linear layer's weight in the layout inference reads fastest ([`Linear::for_inference`]):
    /// for a model that only predicts from now on.
    pub fn for_inference(&mut self) -> Result<()> {
        for layer in &mut self.layers {
            for linear in [
                &mut layer.query,
                &mut layer.key,
                &mut layer.value,
                &mut layer.attn_out,
                &mut layer.intermediate,
                &mut layer.output,
            ] {
                linear.for_inference()?;
            }
        }
        if let Some(pooler) = &mut self.pooler {
            pooler.for_inference()?;
        }
        self.classifier.for_inference()
    }

    /// Creates every variable under `bert.` (random, N(0, 0.02) like HF), the head as `classifier.`,
    /// then the pooler (CLS pooling) and the LoRA adapters (`A` uniform in ±1/√inputs, `B` zero, as
    /// PEFT). Load pretrained weights with [`Params::load_prefixed`] afterwards: the head stays random.
    pub fn new(
        params: &mut Params,
        config: BertConfig,
        num_labels: usize,
        options: &BertOptions,
    ) -> Result<Self> {
        let h = config.hidden_size;
        let emb = |params: &mut Params, name: &str, rows: usize| -> Result<Embedding> {
            Ok(Embedding::new(
                params.normal(
                    &format!("bert.embeddings.{name}.weight"),
                    &[rows, h],
                    INIT_STD,
                )?,
                h,
            ))
        };
        let word = emb(params, "word_embeddings", config.vocab_size)?;
        let position = emb(
            params,
            "position_embeddings",
            config.max_position_embeddings,
        )?;
        let token_type = emb(params, "token_type_embeddings", config.type_vocab_size)?;
        let emb_norm = LayerNorm::new(
            params,
            "bert.embeddings.LayerNorm",
            h,
            config.layer_norm_eps,
        )?;
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for i in 0..config.num_hidden_layers {
            let p = format!("bert.encoder.layer.{i}");
            layers.push(Layer {
                query: linear(params, &format!("{p}.attention.self.query"), h, h, INIT_STD)?,
                key: linear(params, &format!("{p}.attention.self.key"), h, h, INIT_STD)?,
                value: linear(params, &format!("{p}.attention.self.value"), h, h, INIT_STD)?,
                attn_out: linear(
                    params,
                    &format!("{p}.attention.output.dense"),
                    h,
                    h,
                    INIT_STD,
                )?,
                attn_norm: LayerNorm::new(
                    params,
                    &format!("{p}.attention.output.LayerNorm"),
                    h,
                    config.layer_norm_eps,
                )?,
                intermediate: linear(
                    params,
                    &format!("{p}.intermediate.dense"),
                    h,
                    config.intermediate_size,
                    INIT_STD,
                )?,
                output: linear(
                    params,
                    &format!("{p}.output.dense"),
                    config.intermediate_size,
                    h,
                    INIT_STD,
                )?,
                out_norm: LayerNorm::new(
                    params,
                    &format!("{p}.output.LayerNorm"),
                    h,
                    config.layer_norm_eps,
                )?,
            });
        }
        let classifier = linear(params, "classifier", h, num_labels, INIT_STD)?;
        let pooler = match options.pooling {
            Pooling::Cls => Some(linear(params, POOLER, h, h, INIT_STD)?),
            Pooling::Mean => None,
        };
        if let Some(lora) = &options.lora {
            for (i, layer) in layers.iter_mut().enumerate() {
                for &target in &lora.target_modules {
                    let linear = layer.module(target);
                    let (outputs, inputs) = linear.dims();
                    let rank = lora.rank as usize;
                    if rank > inputs.min(outputs) {
                        bail!(UserError::new(format!(
                            "customization.rank: {rank} is more than the {} the base model's {} \
                             layers allow",
                            inputs.min(outputs),
                            target.module()
                        )));
                    }
                    let bound = 1.0 / (inputs as f32).sqrt();
                    let a = params.uniform(
                        &lora_name(i, target.module(), 'A'),
                        &[rank, inputs],
                        bound,
                    )?;
                    let b = params.constant(
                        &lora_name(i, target.module(), 'B'),
                        &[outputs, rank],
                        0.0,
                    )?;
                    linear.set_adapter(Adapter {
                        a,
                        b,
                        scale: lora.scale(),
                        dropout: lora.dropout as f32,
                    });
                }
            }
        }
        Ok(Self {
            heads: config.num_attention_heads,
            head_dim: h / config.num_attention_heads,
            dropout: options.dropout.unwrap_or(config.hidden_dropout_prob) as f32,
            relu: config.hidden_act == "relu",
            pooler,
            word,
            position,
            token_type,
            emb_norm,
            layers,
            classifier,
            config,
        })
    }

    /// Logits `(batch, labels)` for token ids and an attention mask, both `(batch, seq)` u32.
    /// `train`: gradients will be taken (dropout is drawn from `rng` when there is one); otherwise
    /// the inference path runs (fused softmax, no gradient bookkeeping in the fused layers).
    pub fn forward(
        &self,
        ids: &Tensor,
        mask: &Tensor,
        mut rng: Option<&mut StdRng>,
        train: bool,
    ) -> Result<Tensor> {
        let (b, s) = ids.dims2()?;
        let device = ids.device();
        let positions = Tensor::arange(0u32, s as u32, device)?
            .unsqueeze(0)?
            .broadcast_as((b, s))?
            .contiguous()?;
        let types = Tensor::zeros((b, s), DType::U32, device)?;
        let x = self
            .word
            .forward(ids)?
            .add(&self.position.forward(&positions)?)?
            .add(&self.token_type.forward(&types)?)?;
        let mut x = self.drop(&self.emb_norm.forward(&x, train)?, &mut rng)?;

        let mask_f = mask.to_dtype(DType::F32)?;
        // Additive attention bias: 0 where attended, a large negative number on padding.
        let bias = ((mask_f.clone() - 1.0)? * 1e4)?;
        // On the CPU, attention is one fused operation over the projections' layout.
        let fused_bias = match device.is_cpu() {
            true => Some(bias.flatten_all()?.to_vec1::<f32>()?),
            false => None,
        };
        let bias = bias.reshape((b, 1, 1, s))?;
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        for layer in &self.layers {
            let q = layer.query.forward_with(&x, &mut rng, train)?;
            let k = layer.key.forward_with(&x, &mut rng, train)?;
            let v = layer.value.forward_with(&x, &mut rng, train)?;
            let ctx = match &fused_bias {
                Some(bias) => attention(&q, &k, &v, bias, self.heads, scale, train)?,
                None => {
                    let split = |t: Tensor| -> Result<Tensor> {
                        Ok(t.reshape((b, s, self.heads, self.head_dim))?
                            .transpose(1, 2)?
                            .contiguous()?)
                    };
                    let (q, k, v) = (split(q)?, split(k)?, split(v)?);
                    let scores = (q.matmul(&k.t()?)? * scale)?.broadcast_add(&bias)?;
                    let probs = candle_nn::ops::softmax(&scores, candle_core::D::Minus1)?;
                    probs.matmul(&v)?.transpose(1, 2)?.contiguous()?.reshape((
                        b,
                        s,
                        self.heads * self.head_dim,
                    ))?
                }
            };
            let attn = layer.attn_out.forward_with(&ctx, &mut rng, train)?;
            let attn = self.drop(&attn, &mut rng)?;
            x = layer.attn_norm.forward(&attn.add(&x)?, train)?;
            let inner = layer.intermediate.forward_with(&x, &mut rng, train)?;
            let inner = if self.relu {
                inner.relu()?
            } else {
                gelu(&inner, train)?
            };
            let out = layer.output.forward_with(&inner, &mut rng, train)?;
            let out = self.drop(&out, &mut rng)?;
            x = layer.out_norm.forward(&out.add(&x)?, train)?;
        }

        let pooled = match &self.pooler {
            // BERT's pooler: tanh of a dense layer over the first ([CLS]) token.
            Some(pooler) => pooler
                .forward(&x.narrow(1, 0, 1)?.squeeze(1)?, train)?
                .tanh()?,
            // The mean over the tokens the mask keeps.
            None => {
                let m = mask_f.unsqueeze(2)?;
                let summed = x.broadcast_mul(&m)?.sum(1)?;
                let counts = m.sum(1)?.clamp(1.0, f64::MAX)?;
                summed.broadcast_div(&counts)?
            }
        };
        let pooled = self.drop(&pooled, &mut rng)?;
        self.classifier.forward(&pooled, train)
    }

    fn drop(&self, x: &Tensor, rng: &mut Option<&mut StdRng>) -> Result<Tensor> {
        match rng {
            Some(rng) => dropout(x, self.dropout, rng),
            None => Ok(x.clone()),
        }
    }
}

/// Replaces each adapted weight `W` by `W + scale · B A`.
pub(super) fn merge_lora(
    weights: &mut HashMap<String, Tensor>,
    all: &HashMap<String, Tensor>,
    lora: &LoraSettings,
    layers: usize,
) -> Result<()> {
    for layer in 0..layers {
        for target in &lora.target_modules {
            let module = target.module();
            let name = format!("bert.encoder.layer.{layer}.{module}.weight");
            let get = |n: &str| all.get(n).with_context(|| format!("no tensor {n}"));
            let a = get(&lora_name(layer, module, 'A'))?;
            let b = get(&lora_name(layer, module, 'B'))?;
            let merged = get(&name)?.add(&(b.matmul(a)? * lora.scale())?)?;
            weights.insert(name, merged);
        }
    }
    Ok(())
}
