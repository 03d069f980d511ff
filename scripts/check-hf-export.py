#!/usr/bin/env python3
"""Checks that a text model kiln exported loads in Python `transformers` and gives kiln's logits.

    check-hf-export.py MODEL_DIR EXPECTED_JSON

MODEL_DIR is a model version's folder (unzipped from `GET /models/{name}/versions/{version}/download`).
EXPECTED_JSON holds what kiln's `predict` answered: {"inputs": ["text", ...], "logits": [[...], ...]}.

The model is loaded with `AutoModelForSequenceClassification.from_pretrained(MODEL_DIR)`. With CLS
pooling its own forward pass is kiln's. With MEAN pooling (kiln's default) the recipe is: run the
encoder, average its last hidden states over the attention mask, and apply the classifier:

    out = model.bert(input_ids=ids, attention_mask=mask, token_type_ids=zeros).last_hidden_state
    pooled = (out * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
    logits = model.classifier(pooled)

Inputs are tokenized with the folder's `tokenizer.json` (the `tokenizers` library), truncated to the
`maxSeqLength` in `kiln.json` and padded to the longest input of the batch. Exits 0 when every logit is
within the tolerance (1e-4, or --tolerance), 1 when one is not, 2 when the check cannot run.
"""

import argparse
import json
import os
import sys


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir")
    parser.add_argument("expected_json")
    parser.add_argument("--tolerance", type=float, default=1e-4)
    args = parser.parse_args()

    try:
        import torch
        from tokenizers import Tokenizer
        from transformers import AutoModelForSequenceClassification
    except ImportError as e:
        print(f"cannot run the check: {e} (pip install transformers torch)", file=sys.stderr)
        return 2

    with open(os.path.join(args.model_dir, "kiln.json")) as f:
        manifest = json.load(f)
    with open(args.expected_json) as f:
        expected = json.load(f)
    pooling = manifest.get("pooling") or manifest.get("architecture", {}).get("pooling", "mean")
    max_len = manifest.get("maxSeqLength") or manifest.get("architecture", {}).get("maxSeqLength", 128)

    model = AutoModelForSequenceClassification.from_pretrained(args.model_dir)
    model.eval()
    labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
    if labels != manifest["labels"]:
        print(f"config.json's id2label {labels} is not kiln.json's labels {manifest['labels']}")
        return 1

    tokenizer = Tokenizer.from_file(os.path.join(args.model_dir, "tokenizer.json"))
    tokenizer.enable_truncation(max_length=max_len)
    pad_id = tokenizer.token_to_id("[PAD]") or 0
    tokenizer.enable_padding(pad_id=pad_id, pad_token="[PAD]")
    encodings = tokenizer.encode_batch(expected["inputs"])
    ids = torch.tensor([e.ids for e in encodings])
    mask = torch.tensor([e.attention_mask for e in encodings])
    zeros = torch.zeros_like(ids)

    with torch.no_grad():
        if pooling == "cls":
            logits = model(input_ids=ids, attention_mask=mask, token_type_ids=zeros).logits
        else:
            out = model.bert(input_ids=ids, attention_mask=mask, token_type_ids=zeros).last_hidden_state
            m = mask.unsqueeze(-1).to(out.dtype)
            pooled = (out * m).sum(1) / m.sum(1).clamp(min=1.0)
            logits = model.classifier(pooled)

    want = torch.tensor(expected["logits"], dtype=logits.dtype)
    diff = (logits - want).abs().max().item()
    print(f"pooling={pooling} inputs={len(expected['inputs'])} labels={labels} max_abs_diff={diff:.3e}")
    if diff > args.tolerance:
        print(f"transformers' logits differ from kiln's by {diff:.3e} > {args.tolerance:g}")
        print(f"transformers: {logits.tolist()}")
        print(f"kiln:         {want.tolist()}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
