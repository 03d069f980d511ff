//! The `README.md` in every model folder: what the files are, the labels, and how to load the model
//! elsewhere, written for the person who unzips a download.

use std::fmt::Write;

use crate::domain::{ModelArchitecture, ModelManifest, Pooling};

/// The README of a model folder described by `manifest`.
pub fn for_model(manifest: &ModelManifest) -> String {
    let mut out = String::new();
    let labels = manifest
        .labels
        .iter()
        .enumerate()
        .map(|(i, l)| format!("`{l}` ({i})"))
        .collect::<Vec<_>>()
        .join(", ");
    let m = &manifest.metrics;
    match &manifest.architecture {
        ModelArchitecture::Bert {
            pooling,
            base_model,
            max_seq_length,
            lora,
        } => {
            let separate = lora.as_ref().is_some_and(|l| !l.merge_adapters);
            let kiln_classes = *pooling == Pooling::Mean || separate;
            let _ = writeln!(
                out,
                "# A text classifier trained by kiln\n\n\
                 Labels (output index in brackets): {labels}.\n\
                 Base model: `{base_model}`. It reads at most {max_seq_length} tokens of a text (the rest is \
                 cut). Pooling: {}.\n\
                 Validation at epoch {}: accuracy {:.4}, macro F1 {:.4}, loss {:.4}.\n",
                match pooling {
                    Pooling::Mean => "the mean of the encoder's outputs over the attention mask",
                    Pooling::Cls => "BERT's pooler over the first token ([CLS])",
                },
                m.epoch,
                m.accuracy,
                m.f1,
                m.val_loss,
            );
            out.push_str("## Files\n\n");
            out.push_str(
                "- `model.safetensors`: the weights, under Hugging Face's BERT names (`bert.…`, `classifier.…`)",
            );
            out.push_str(if separate {
                "; the base model's, without the LoRA adapters.\n"
            } else {
                ".\n"
            });
            if separate {
                out.push_str(
                    "- `adapter_model.safetensors`, `adapter_config.json`: the LoRA adapters, the head and \
                     (with CLS pooling) the pooler, in PEFT's layout.\n",
                );
            }
            out.push_str(
                "- `config.json`: the network's sizes and `id2label`.\n\
                 - `tokenizer.json`, `tokenizer_config.json`: the tokenizer, cutting at the length above.\n",
            );
            if kiln_classes {
                out.push_str(
                    "- `modeling_kiln.py`: kiln's classes for `transformers` (below says why).\n",
                );
            }
            out.push_str(
                "- `kiln.json`: what kiln knows of the run: task, labels, hyperparameters, the kept \
                 epoch's metrics.\n- `README.md`: this file.\n\n",
            );
            out.push_str("## Loading it in Python\n\n");
            let trust = if kiln_classes {
                ", trust_remote_code=True"
            } else {
                ""
            };
            let _ = write!(
                out,
                "```python\n\
                 import torch\n\
                 from transformers import AutoModelForSequenceClassification, AutoTokenizer\n\n\
                 folder = \".\"  # where this file is\n\
                 tokenizer = AutoTokenizer.from_pretrained(folder)\n\
                 model = AutoModelForSequenceClassification.from_pretrained(folder{trust}).eval()\n\
                 batch = tokenizer([\"some text\"], padding=True, truncation=True, return_tensors=\"pt\")\n\
                 with torch.no_grad():\n    \
                     probabilities = model(**batch).logits.softmax(-1)\n\
                 print(model.config.id2label[int(probabilities[0].argmax())])\n\
                 ```\n\n\
                 `pipeline(\"text-classification\", model=folder{trust})` works too. These give kiln's \
                 probabilities.\n\n"
            );
            if *pooling == Pooling::Mean {
                out.push_str(
                    "This model classifies from the mean of the encoder's outputs, which \
                     `BertForSequenceClassification` does not do: loaded as one, it would run an untrained \
                     pooler and answer something else. So `config.json` names kiln's classes in \
                     `modeling_kiln.py`, which `trust_remote_code=True` lets `transformers` use (read the \
                     file first: it is short), and loading without it stops with an error.\n\n",
                );
            }
            if separate {
                out.push_str(
                    "The adapters are kept apart: kiln's classes merge them in as the model loads. To use \
                     them with PEFT instead, load the base weights alone and add the adapters:\n\n\
                     ```python\n\
                     from peft import PeftModel\n\n\
                     base = AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True, apply_adapters=False)\n\
                     model = PeftModel.from_pretrained(base, folder).eval()\n\
                     ```\n\n",
                );
            }
        }
        ModelArchitecture::Mlp {
            hidden_sizes,
            features,
            ..
        } => {
            let _ = writeln!(
                out,
                "# A tabular classifier trained by kiln\n\n\
                 Labels (output index in brackets): {labels}.\n\
                 Features, in the order the model reads them: {}.\n\
                 Validation at epoch {}: accuracy {:.4}, macro F1 {:.4}, loss {:.4}.\n\n\
                 ## Files\n\n\
                 - `model.safetensors`: a multilayer perceptron, `layers.0` to `layers.{}` \
                 (`weight` is `[out, in]`, as `torch.nn.Linear`), hidden sizes {:?}, ReLU between layers.\n\
                 - `kiln.json`: the task, labels, hyperparameters, the kept epoch's metrics, and each \
                 feature's `standardization` (`mean`, `std`).\n\
                 - `README.md`: this file.\n\n\
                 ## Computing it elsewhere\n\n\
                 Standardise each feature as `(x - mean) / std` with the numbers in `kiln.json`, then apply \
                 each layer `x @ weight.T + bias`, with ReLU after every layer but the last; the softmax of \
                 the outputs gives the probabilities in the label order above.",
                feature_list(features),
                m.epoch,
                m.accuracy,
                m.f1,
                m.val_loss,
                hidden_sizes.len(),
                hidden_sizes,
            );
        }
    }
    out
}

/// The first features by name; the rest counted (`kiln.json` lists them all).
fn feature_list(features: &[String]) -> String {
    const SHOWN: usize = 20;
    let mut list = features
        .iter()
        .take(SHOWN)
        .map(|f| format!("`{f}`"))
        .collect::<Vec<_>>()
        .join(", ");
    if features.len() > SHOWN {
        let _ = write!(
            list,
            " and {} more (`kiln.json` lists them all)",
            features.len() - SHOWN
        );
    }
    list
}
