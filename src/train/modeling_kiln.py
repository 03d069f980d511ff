"""kiln's text classifier for Hugging Face `transformers`.

kiln writes this file into a model's folder when plain `BertForSequenceClassification` would compute
something else than kiln does: with mean pooling (kiln's default), which classifies from the mean of the
encoder's outputs over the attention mask rather than through BERT's pooler, and when a LoRA run kept its
adapters apart from the base weights. `config.json` names these classes in its `auto_map`, so

    AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True)

gives kiln's logits, and the same call without `trust_remote_code=True` stops with an error instead of
loading a different model. With separate adapters the weights in `adapter_model.safetensors` are merged
in as they load (W + alpha / r * B A; with `peft` installed, transformers loads them through PEFT
itself); pass `apply_adapters=False` to get the base weights alone, for
`peft.PeftModel.from_pretrained(model, folder)`.
"""

import json
import os

import torch
from torch import nn
from transformers import BertConfig
from transformers.modeling_outputs import SequenceClassifierOutput
from transformers.models.bert.modeling_bert import BertModel, BertPreTrainedModel

ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
PEFT_PREFIX = "base_model.model."


class KilnBertConfig(BertConfig):
    model_type = "kiln-bert"

    def __init__(self, pooling="mean", separate_adapters=False, **kwargs):
        super().__init__(**kwargs)
        self.pooling = pooling
        self.separate_adapters = separate_adapters


class KilnBertForSequenceClassification(BertPreTrainedModel):
    config_class = KilnBertConfig
    _keys_to_ignore_on_load_unexpected = [r"pooler"]

    def __init__(self, config):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.bert = BertModel(config, add_pooling_layer=config.pooling == "cls")
        dropout = config.classifier_dropout
        self.dropout = nn.Dropout(config.hidden_dropout_prob if dropout is None else dropout)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, apply_adapters=True, **kwargs):
        folder = str(pretrained_model_name_or_path)
        if not apply_adapters:
            return _base_alone(cls, folder)
        model = super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        # With `peft` installed, transformers itself loads the adapter it finds in the folder.
        if model.config.separate_adapters and not getattr(model, "_hf_peft_config_loaded", False):
            if not os.path.isfile(os.path.join(folder, ADAPTER_WEIGHTS)):
                raise OSError(
                    f"{folder} has no {ADAPTER_WEIGHTS}: this kiln model keeps its LoRA adapters "
                    "apart, and without them its weights are the base model's"
                )
            _merge_adapters(model, folder)
        return model

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        token_type_ids=None,
        labels=None,
        return_dict=None,
        **kwargs,
    ):
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        out = self.bert(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        )
        if self.config.pooling == "cls":
            pooled = out.pooler_output
        else:
            mask = attention_mask.unsqueeze(-1).to(out.last_hidden_state.dtype)
            pooled = (out.last_hidden_state * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        logits = self.classifier(self.dropout(pooled))
        loss = None
        if labels is not None:
            loss = nn.functional.cross_entropy(logits.view(-1, self.num_labels), labels.view(-1))
        return SequenceClassifierOutput(loss=loss, logits=logits)


def _base_alone(cls, folder):
    """The model with the base weights of `model.safetensors` only, for PEFT to add the adapters to."""
    from safetensors.torch import load_file

    model = cls(KilnBertConfig.from_pretrained(folder))
    result = model.load_state_dict(load_file(os.path.join(folder, "model.safetensors")), strict=False)
    if result.missing_keys:
        raise OSError(f"{folder}/model.safetensors lacks {', '.join(result.missing_keys)}")
    return model.eval()


def _merge_adapters(model, folder):
    """Adds alpha / r * B A to each adapted weight, and loads the head (and pooler) trained with them."""
    from safetensors.torch import load_file

    with open(os.path.join(folder, ADAPTER_CONFIG)) as f:
        adapter = json.load(f)
    scale = adapter["lora_alpha"] / adapter["r"]
    tensors = load_file(os.path.join(folder, ADAPTER_WEIGHTS))
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, a in tensors.items():
            if ".lora_A." not in name:
                continue
            module = name[len(PEFT_PREFIX) :].split(".lora_A.")[0]
            b = tensors[name.replace(".lora_A.", ".lora_B.")]
            params[module + ".weight"] += scale * (b @ a)
        for name, value in tensors.items():
            if ".lora_" not in name:
                params[name[len(PEFT_PREFIX) :]].copy_(value)
