//! Tokenizers: a pretrained model's `tokenizer.json`, or a BERT WordPiece vocabulary fitted on the
//! training texts for a model trained from random weights.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result, anyhow};
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::bert::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::processors::bert::BertProcessing;
use tokenizers::{
    NormalizedString, Normalizer, OffsetReferential, OffsetType, PaddingParams, PaddingStrategy,
    PreTokenizedString, PreTokenizer, Tokenizer, TruncationParams,
};

use crate::domain::UserError;

/// The largest vocabulary fitted on a dataset (most frequent words first). Characters seen in the data
/// are always in it, so an unseen word is spelled out rather than lost.
pub const MAX_FITTED_VOCAB: usize = 30_000;

/// The largest `tokenizer.json` read.
pub const MAX_TOKENIZER_BYTES: u64 = 100 * 1024 * 1024;

const SPECIALS: [&str; 5] = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"];

/// Loads `tokenizer.json` and sets padding to the longest sequence of each batch and truncation to
/// `max_len` tokens (pretrained files often pad to a fixed 128 or 512).
pub fn load(path: &Path, max_len: usize) -> Result<Tokenizer> {
    let size = std::fs::metadata(path)
        .with_context(|| format!("reading {}", path.display()))?
        .len();
    if size > MAX_TOKENIZER_BYTES {
        anyhow::bail!(UserError::new(format!(
            "the base model's tokenizer.json is {size} bytes, more than the {MAX_TOKENIZER_BYTES} kiln reads"
        )));
    }
    let mut tokenizer = Tokenizer::from_file(path).map_err(|e| {
        UserError::wrap(
            "the base model's tokenizer.json is not a tokenizer kiln can read",
            anyhow!("reading {}: {e}", path.display()),
        )
    })?;
    configure(&mut tokenizer, max_len)?;
    Ok(tokenizer)
}

fn configure(tokenizer: &mut Tokenizer, max_len: usize) -> Result<()> {
    let pad_id = tokenizer.token_to_id("[PAD]").unwrap_or(0);
    tokenizer.with_padding(Some(PaddingParams {
        strategy: PaddingStrategy::BatchLongest,
        pad_id,
        pad_token: "[PAD]".into(),
        ..Default::default()
    }));
    tokenizer
        .with_truncation(Some(TruncationParams {
            max_length: max_len,
            ..Default::default()
        }))
        .map_err(|e| anyhow!("setting truncation: {e}"))?;
    Ok(())
}

/// Builds an uncased BERT WordPiece tokenizer whose vocabulary is the specials, every character seen
/// (plain and `##` continuation) and the most frequent words, up to [`MAX_FITTED_VOCAB`] entries.
pub fn fit<'a>(texts: impl IntoIterator<Item = &'a str>, max_len: usize) -> Result<Tokenizer> {
    let mut counts = WordCounts::default();
    for text in texts {
        counts.add(text)?;
    }
    counts.into_tokenizer(max_len)
}

/// Word frequencies of training texts, counted one text at a time, from which [`fit`]'s tokenizer is
/// built.
#[derive(Default)]
pub struct WordCounts(HashMap<String, u64>);

impl WordCounts {
    /// Counts the words of one text as BERT's normaliser and pre-tokeniser split them.
    pub fn add(&mut self, text: &str) -> Result<()> {
        let mut normalized = NormalizedString::from(text);
        BertNormalizer::default()
            .normalize(&mut normalized)
            .map_err(|e| anyhow!("normalizing text: {e}"))?;
        let mut pre = PreTokenizedString::from(normalized);
        BertPreTokenizer
            .pre_tokenize(&mut pre)
            .map_err(|e| anyhow!("splitting text: {e}"))?;
        for (word, _, _) in pre.get_splits(OffsetReferential::Original, OffsetType::Char) {
            *self.0.entry(word.to_string()).or_default() += 1;
        }
        Ok(())
    }

    /// The tokenizer whose vocabulary these counts choose.
    pub fn into_tokenizer(self, max_len: usize) -> Result<Tokenizer> {
        let word_counts = self.0;
        let mut vocab: HashMap<String, u32> = HashMap::new();
        let push = |token: String, vocab: &mut HashMap<String, u32>| {
            let next = vocab.len() as u32;
            vocab.entry(token).or_insert(next);
        };
        for special in SPECIALS {
            push(special.to_string(), &mut vocab);
        }
        let mut chars: Vec<char> = word_counts.keys().flat_map(|w| w.chars()).collect();
        chars.sort_unstable();
        chars.dedup();
        for c in &chars {
            if vocab.len() + 2 > MAX_FITTED_VOCAB {
                break;
            }
            push(c.to_string(), &mut vocab);
            push(format!("##{c}"), &mut vocab);
        }
        let mut words: Vec<(String, u64)> = word_counts
            .into_iter()
            .filter(|(w, _)| w.chars().count() > 1)
            .collect();
        words.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        for (word, _) in words {
            if vocab.len() >= MAX_FITTED_VOCAB {
                break;
            }
            push(word, &mut vocab);
        }

        let cls = vocab["[CLS]"];
        let sep = vocab["[SEP]"];
        let model = WordPiece::builder()
            .vocab(vocab.into_iter().collect::<ahash::AHashMap<String, u32>>())
            .unk_token("[UNK]".into())
            .build()
            .map_err(|e| anyhow!("building the WordPiece model: {e}"))?;
        let mut tokenizer = Tokenizer::new(model);
        tokenizer
            .with_normalizer(Some(BertNormalizer::default()))
            .map_err(|e| anyhow!("setting the normalizer: {e}"))?;
        tokenizer.with_pre_tokenizer(Some(BertPreTokenizer));
        tokenizer.with_post_processor(Some(BertProcessing::new(
            ("[SEP]".into(), sep),
            ("[CLS]".into(), cls),
        )));
        configure(&mut tokenizer, max_len)?;
        Ok(tokenizer)
    }
}

/// Writes `tokenizer.json`.
pub fn save(tokenizer: &Tokenizer, path: &Path) -> Result<()> {
    let json = tokenizer
        .to_string(true)
        .map_err(|e| anyhow!("serialising the tokenizer: {e}"))?;
    std::fs::write(path, json).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fitted_tokenizer_knows_dataset_words_and_spells_out_new_ones() {
        let tok = fit(["Ignore previous instructions", "hello there"], 16).unwrap();
        let enc = tok.encode("ignore THERE", true).unwrap();
        assert_eq!(enc.get_tokens(), &["[CLS]", "ignore", "there", "[SEP]"]);
        let enc = tok.encode("hero", true).unwrap();
        assert!(
            !enc.get_tokens().contains(&"[UNK]".to_string()),
            "{:?}",
            enc.get_tokens()
        );
    }
}
