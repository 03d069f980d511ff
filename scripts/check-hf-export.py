#!/usr/bin/env python3
"""Checks that a text model kiln exported loads in Python the usual ways and gives kiln's outputs, or refuses.

    check-hf-export.py MODEL_DIR EXPECTED_JSON

MODEL_DIR is a model version's folder (unzipped from `GET /models/{name}/versions/{version}/download`).
EXPECTED_JSON holds what kiln's `predict` answered: {"inputs": ["text", ...], "logits": [[...], ...]}.

Each way a person would load the folder either gives kiln's logits (and kiln's probabilities, their
softmax) within the tolerance, or stops with an error; a way that loads and answers something else fails
the check:

- plain:    AutoModelForSequenceClassification.from_pretrained(dir)
- remote:   the same with trust_remote_code=True (kiln's classes in modeling_kiln.py, when shipped)
- pipeline: pipeline("text-classification", model=dir, trust_remote_code=True, top_k=None)
- peft:     with separate LoRA adapters, PeftModel.from_pretrained(base, dir) over the base weights alone
            (and the merge kiln's classes do where peft is not installed)

Inputs are tokenized with AutoTokenizer (the folder's tokenizer_config.json: truncation at kiln.json's
maxSeqLength), padded to the longest input. Which ways must work: CLS pooling with merged weights loads
plain; everything else loads with trust_remote_code=True and refuses plain. Exits 0 when all hold, 1 when
one does not, 2 when the check cannot run (transformers, torch or, for separate adapters, peft missing).
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
    folder = args.model_dir

    try:
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline
    except ImportError as e:
        print(f"cannot run the check: {e} (pip install transformers torch)", file=sys.stderr)
        return 2
    separate = os.path.isfile(os.path.join(folder, "adapter_config.json"))
    if separate:
        try:
            from peft import PeftModel
        except ImportError as e:
            print(f"cannot run the check: {e} (pip install peft)", file=sys.stderr)
            return 2

    with open(os.path.join(folder, "kiln.json")) as f:
        manifest = json.load(f)
    with open(os.path.join(folder, "config.json")) as f:
        config = json.load(f)
    with open(args.expected_json) as f:
        expected = json.load(f)
    pooling = manifest["pooling"]
    texts = expected["inputs"]
    want = torch.tensor(expected["logits"], dtype=torch.float32)
    kiln_classes = config.get("model_type") == "kiln-bert"
    if (pooling == "mean" or separate) != kiln_classes:
        print(f"config.json's model_type {config.get('model_type')!r} does not fit pooling={pooling} "
              f"separate_adapters={separate}")
        return 1

    tokenizer = AutoTokenizer.from_pretrained(folder)
    batch = tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
    failures = []

    def compare(way, logits):
        diff = (logits - want).abs().max().item()
        pdiff = (logits.softmax(-1) - want.softmax(-1)).abs().max().item()
        print(f"{way}: loads, max_abs_diff logits {diff:.3e} probabilities {pdiff:.3e}")
        if diff > args.tolerance:
            failures.append(f"{way} gives other logits than kiln: {logits.tolist()} vs {want.tolist()}")

    def run(model):
        model.eval()
        labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
        if labels != manifest["labels"]:
            failures.append(f"id2label {labels} is not kiln.json's labels {manifest['labels']}")
        with torch.no_grad():
            return model(**batch).logits

    # plain
    try:
        model = AutoModelForSequenceClassification.from_pretrained(folder)
    except Exception as e:  # noqa: BLE001 - any refusal is what is checked
        message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"plain: refuses ({type(e).__name__}: {message})")
        if not kiln_classes:
            failures.append("plain loading refuses a model transformers' own classes compute")
    else:
        compare("plain", run(model))
    # remote
    model = AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True)
    compare("remote", run(model))
    # pipeline
    classify = pipeline("text-classification", model=folder, trust_remote_code=True, top_k=None)
    answers = classify(texts)
    by_label = [{a["label"]: a["score"] for a in answer} for answer in answers]
    probabilities = torch.tensor([[row[label] for label in manifest["labels"]] for row in by_label])
    pdiff = (probabilities - want.softmax(-1)).abs().max().item()
    print(f"pipeline: loads, max_abs_diff probabilities {pdiff:.3e}")
    if pdiff > args.tolerance:
        failures.append(f"the pipeline's probabilities differ from kiln's by {pdiff:.3e}")
    # peft
    if separate:
        base = AutoModelForSequenceClassification.from_pretrained(
            folder, trust_remote_code=True, apply_adapters=False
        )
        compare("peft", run(PeftModel.from_pretrained(base, folder)))
        # What kiln's classes do where peft is not installed: merge the adapters themselves.
        merged = AutoModelForSequenceClassification.from_pretrained(
            folder, trust_remote_code=True, apply_adapters=False
        )
        sys.modules[type(merged).__module__]._merge_adapters(merged, folder)
        compare("merged without peft", run(merged))

    print(f"pooling={pooling} separate_adapters={separate} inputs={len(texts)} labels={manifest['labels']}")
    for failure in failures:
        print(f"FAILED: {failure}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
