"""PyTorch reference for `kiln bench train|predict`: the identical computation in PyTorch eager.

Same weights for `--model minilm` (the base model's model.safetensors; `tiny` and `mlp` have the same
shapes, their random weights are drawn differently: compare their speed only), the same synthetic batch (token
ids, labels and tabular rows from the formulas in src/train/bench.rs), the same classifier head
(weight[l][k] = 0.02 * sin(1 + l * hidden + k), bias 0), the same encoder arithmetic as kiln's BERT
(layer norm, explicit softmax attention with an additive mask, erf GELU, mean pooling over the mask,
linear head, cross-entropy), and AdamW with the same hyperparameters. It prints one line per step and,
last, `samples_per_s=<median over the steps after the warm-up>`, like kiln.

    python3 benches/reference/torch_finetune.py train --model minilm --base-model DIR \
        --batch 16 --seq 64 --steps 8 --threads 2

Needs `torch` (and `numpy`); the weights are read with torch's own safetensors-free reader below, so no
other package is required.
"""

import argparse
import json
import math
import os
import struct
import statistics
import time

import torch
import torch.nn.functional as F

LABELS = 2
FEATURES = 32


def load_safetensors(path):
    """Reads a safetensors file (F32 and I64 tensors) without the `safetensors` package."""
    with open(path, "rb") as f:
        header_len = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(header_len))
        data = f.read()
    out = {}
    dtypes = {"F32": torch.float32, "I64": torch.int64, "F16": torch.float16, "BF16": torch.bfloat16}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        t = torch.frombuffer(bytearray(data[start:end]), dtype=dtypes[info["dtype"]])
        out[name] = t.reshape(info["shape"]).clone()
    return out


class Bert(torch.nn.Module):
    def __init__(self, config, dropout):
        super().__init__()
        h = config["hidden_size"]
        self.heads = config["num_attention_heads"]
        self.eps = config.get("layer_norm_eps", 1e-12)
        self.p = config.get("hidden_dropout_prob", 0.1) if dropout else 0.0
        self.relu = config.get("hidden_act", "gelu") == "relu"
        P = torch.nn.Parameter
        self.word = P(torch.zeros(config["vocab_size"], h))
        self.position = P(torch.zeros(config.get("max_position_embeddings", 512), h))
        self.token_type = P(torch.zeros(config.get("type_vocab_size", 2), h))
        self.emb_norm = torch.nn.ParameterList([P(torch.ones(h)), P(torch.zeros(h))])
        self.layers = torch.nn.ModuleList()
        inter = config["intermediate_size"]
        for _ in range(config["num_hidden_layers"]):
            layer = torch.nn.Module()
            layer.q = torch.nn.Linear(h, h)
            layer.k = torch.nn.Linear(h, h)
            layer.v = torch.nn.Linear(h, h)
            layer.o = torch.nn.Linear(h, h)
            layer.attn_norm = torch.nn.ParameterList([P(torch.ones(h)), P(torch.zeros(h))])
            layer.inter = torch.nn.Linear(h, inter)
            layer.out = torch.nn.Linear(inter, h)
            layer.out_norm = torch.nn.ParameterList([P(torch.ones(h)), P(torch.zeros(h))])
            self.layers.append(layer)
        self.classifier = torch.nn.Linear(h, LABELS)

    def load(self, tensors):
        def get(name):
            return tensors.get(name, tensors.get("bert." + name))

        with torch.no_grad():
            self.word.copy_(get("embeddings.word_embeddings.weight"))
            self.position.copy_(get("embeddings.position_embeddings.weight"))
            self.token_type.copy_(get("embeddings.token_type_embeddings.weight"))
            self.emb_norm[0].copy_(get("embeddings.LayerNorm.weight"))
            self.emb_norm[1].copy_(get("embeddings.LayerNorm.bias"))
            for i, layer in enumerate(self.layers):
                p = f"encoder.layer.{i}."
                for mod, name in [(layer.q, "attention.self.query"), (layer.k, "attention.self.key"),
                                  (layer.v, "attention.self.value"), (layer.o, "attention.output.dense"),
                                  (layer.inter, "intermediate.dense"), (layer.out, "output.dense")]:
                    mod.weight.copy_(get(p + name + ".weight"))
                    mod.bias.copy_(get(p + name + ".bias"))
                layer.attn_norm[0].copy_(get(p + "attention.output.LayerNorm.weight"))
                layer.attn_norm[1].copy_(get(p + "attention.output.LayerNorm.bias"))
                layer.out_norm[0].copy_(get(p + "output.LayerNorm.weight"))
                layer.out_norm[1].copy_(get(p + "output.LayerNorm.bias"))

    def forward(self, ids, mask):
        b, s = ids.shape
        h = self.word.shape[1]
        d = h // self.heads
        positions = torch.arange(s).unsqueeze(0).expand(b, s)
        x = self.word[ids] + self.position[positions] + self.token_type[torch.zeros_like(ids)]
        x = F.dropout(F.layer_norm(x, (h,), self.emb_norm[0], self.emb_norm[1], self.eps), self.p, self.training)
        maskf = mask.to(torch.float32)
        bias = ((maskf - 1.0) * 1e4).reshape(b, 1, 1, s)
        for layer in self.layers:
            def split(t):
                return t.reshape(b, s, self.heads, d).transpose(1, 2)
            q, k, v = split(layer.q(x)), split(layer.k(x)), split(layer.v(x))
            scores = q @ k.transpose(-1, -2) * (1.0 / math.sqrt(d)) + bias
            ctx = (torch.softmax(scores, -1) @ v).transpose(1, 2).reshape(b, s, h)
            attn = F.dropout(layer.o(ctx), self.p, self.training)
            x = F.layer_norm(attn + x, (h,), layer.attn_norm[0], layer.attn_norm[1], self.eps)
            inner = layer.inter(x)
            inner = torch.relu(inner) if self.relu else F.gelu(inner)
            out = F.dropout(layer.out(inner), self.p, self.training)
            x = F.layer_norm(out + x, (h,), layer.out_norm[0], layer.out_norm[1], self.eps)
        m = maskf.unsqueeze(2)
        pooled = (x * m).sum(1) / m.sum(1).clamp(min=1.0)
        return self.classifier(F.dropout(pooled, self.p, self.training))


class Mlp(torch.nn.Module):
    def __init__(self, dropout):
        super().__init__()
        self.layers = torch.nn.ModuleList([torch.nn.Linear(FEATURES, 64), torch.nn.Linear(64, 64),
                                           torch.nn.Linear(64, LABELS)])
        self.p = 0.1 if dropout else 0.0

    def forward(self, x):
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.dropout(torch.relu(x), self.p, self.training)
        return x


def build(args):
    b, s = args.batch, args.seq
    if args.model == "mlp":
        model = Mlp(not args.no_dropout)
        rows = torch.tensor([math.sin((i // FEATURES) * 7 + i % FEATURES) for i in range(b * FEATURES)],
                            dtype=torch.float32).reshape(b, FEATURES)
        return model, (rows,)
    if args.model == "minilm":
        with open(os.path.join(args.base_model, "config.json")) as f:
            config = json.load(f)
    else:
        config = {"vocab_size": 1000, "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                  "intermediate_size": 128, "max_position_embeddings": max(s, 8)}
    model = Bert(config, not args.no_dropout)
    if args.model == "minilm":
        model.load(load_safetensors(os.path.join(args.base_model, "model.safetensors")))
    h = config["hidden_size"]
    with torch.no_grad():
        head = torch.tensor([0.02 * math.sin(1 + i) for i in range(LABELS * h)], dtype=torch.float32)
        model.classifier.weight.copy_(head.reshape(LABELS, h))
        model.classifier.bias.zero_()
    vocab = config["vocab_size"]
    low = min(1000, vocab // 2)
    ids = torch.tensor([low + ((i // s) * 131 + (i % s) * 31) % (vocab - low) for i in range(b * s)],
                       dtype=torch.int64).reshape(b, s)
    mask = torch.ones(b, s, dtype=torch.int64)
    return model, (ids, mask)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("kind", choices=["train", "predict"])
    parser.add_argument("--model", choices=["minilm", "tiny", "mlp"], default="minilm")
    parser.add_argument("--base-model")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq", type=int, default=64)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--no-dropout", action="store_true")
    parser.add_argument("--learning-rate", type=float, default=5e-5)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(7)
    device = torch.device(args.device)
    model, inputs = build(args)
    model = model.to(device)
    inputs = tuple(t.to(device) for t in inputs)
    print(f"torch {torch.__version__} {args.kind} model={args.model} batch={args.batch} seq={args.seq} "
          f"threads={torch.get_num_threads()} dropout={not args.no_dropout} device={device}")
    targets = torch.tensor([i % LABELS for i in range(args.batch)], device=device)

    def now():
        """The time once the GPU's queued work is done (a GPU runs asynchronously)."""
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter()

    rates = []
    if args.kind == "train":
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=args.learning_rate, weight_decay=0.01)
        phases = {"forward": [], "backward": [], "optimizer": []}
        for step in range(1, args.warmup + args.steps + 1):
            t0 = now()
            loss = F.cross_entropy(model(*inputs), targets)
            t1 = now()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            t2 = now()
            opt.step()
            t3 = now()
            rate = args.batch / (t3 - t0)
            warm = " (warm-up)" if step <= args.warmup else ""
            print(f"step={step} loss={loss.item():.6f} forward_ms={(t1 - t0) * 1e3:.1f} "
                  f"backward_ms={(t2 - t1) * 1e3:.1f} optimizer_ms={(t3 - t2) * 1e3:.1f} "
                  f"samples_per_s={rate:.2f}{warm}")
            if step > args.warmup:
                rates.append(rate)
                for name, value in zip(phases, [t1 - t0, t2 - t1, t3 - t2]):
                    phases[name].append(value * 1e3)
        print("median " + " ".join(f"{k}_ms={statistics.median(v):.1f}" for k, v in phases.items()))
    else:
        model.eval()
        with torch.inference_mode():
            for step in range(1, args.warmup + args.steps + 1):
                t0 = now()
                p = torch.softmax(model(*inputs), -1)
                first = p[0, 0].item()
                elapsed = now() - t0
                rate = args.batch / elapsed
                warm = " (warm-up)" if step <= args.warmup else ""
                print(f"step={step} ms={elapsed * 1e3:.1f} p0={first:.6f} samples_per_s={rate:.2f}{warm}")
                if step > args.warmup:
                    rates.append(rate)
    print(f"samples_per_s={statistics.median(rates):.2f}")


if __name__ == "__main__":
    main()
