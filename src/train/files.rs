//! The names of the files in an exported model's folder, shared by what writes them (`export`) and
//! what reads them back (serving, retraining).

pub const WEIGHTS: &str = "model.safetensors";
pub const TOKENIZER_CONFIG: &str = "tokenizer_config.json";
/// kiln's classes for `transformers`, shipped where its own would compute something else.
pub const MODELING: &str = "modeling_kiln.py";
/// What a person who unzips the folder reads first.
pub const README: &str = "README.md";
pub const ADAPTER_WEIGHTS: &str = "adapter_model.safetensors";
pub const ADAPTER_CONFIG: &str = "adapter_config.json";
/// PEFT's prefix of every key in an adapter file.
pub const PEFT_PREFIX: &str = "base_model.model.";
