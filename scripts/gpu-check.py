"""The GPU half of scripts/gpu-check: kiln's cuda build on this machine's GPU, end to end.

    python3 scripts/gpu-check.py .gpu-check

Needs: an NVIDIA GPU with its driver, Python with torch (CUDA build), transformers and safetensors, the
stripped `kiln` and the MiniLM's config and tokenizer that `scripts/gpu-check prepare` put in the folder.
No Rust toolchain and no network.

1. Finds the CUDA 13 libraries kiln links (PyTorch's wheels bring them) and checks the binary loads.
2. The MiniLM: its carried weights, or (they are too big to carry) weights of the same shape drawn at
   random with a fixed seed; the speed is the same either way, and the summary says which it was.
3. `kiln bench train|predict --device cuda` beside `benches/reference/torch_finetune.py --device cuda`
   on the same weights and batches: samples/s of each and the ratio.
4. `kiln train --device cuda`: a few hundred steps of fine-tuning on a labelled synthetic dataset; the
   training loss must fall and the validation accuracy rise above chance.
5. `kiln predict` with the trained model on held-out texts, on the GPU and on the CPU: the labels must
   agree (and the probabilities within 1e-3).

Prints each step and a summary; writes the summary as JSON to $OUT/gpu-check.json when OUT is set.
Exits non-zero when a check fails. `GPU_CHECK_DEVICE=cpu GPU_CHECK_QUICK=1` rehearses the script on a
machine without a GPU (fewer rows and steps; the GPU's checks then hold trivially).
"""

import glob
import json
import os
import random
import re
import subprocess
import sys
import time

STAGE = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else ".gpu-check")
KILN = os.path.join(STAGE, "kiln")
WORK = os.path.join(STAGE, "work")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIBRARIES = ["libcublas.so.13", "libcublasLt.so.13", "libcurand.so.10", "libnvrtc.so.13", "libcudart.so.13"]
DEVICE = os.environ.get("GPU_CHECK_DEVICE", "cuda")
QUICK = os.environ.get("GPU_CHECK_QUICK") == "1"
summary = {"checks": {}, "device": DEVICE}
started = time.time()


def say(line):
    print(f"[{time.time() - started:6.1f}s] {line}", flush=True)


def check(name, ok, detail):
    summary["checks"][name] = {"ok": bool(ok), "detail": detail}
    say(f"{'PASS' if ok else 'FAIL'} {name}: {detail}")


def run(args, env=None, stdin=None, timeout=600):
    say("$ " + " ".join(os.path.relpath(a, REPO) if a.startswith(REPO) else a for a in args))
    done = subprocess.run(args, env=env, input=stdin, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        print(done.stdout[-4000:], done.stderr[-4000:], sep="\n", flush=True)
        raise SystemExit(f"{args[0]} exited with {done.returncode}")
    return done


def library_path():
    """The folders holding the CUDA 13 libraries, from the Python packages PyTorch installed."""
    folders = []
    for root in sys.path:
        for name in LIBRARIES:
            for found in glob.glob(os.path.join(root, "nvidia", "**", name), recursive=True):
                folders.append(os.path.dirname(found))
    folders = list(dict.fromkeys(folders))
    missing = [n for n in LIBRARIES if not any(os.path.exists(os.path.join(f, n)) for f in folders)]
    return folders, missing


def minilm():
    """The MiniLM folder: carried weights, or same-shape weights drawn at random (seed 0)."""
    folder = os.path.join(STAGE, "minilm")
    weights = os.path.join(folder, "model.safetensors")
    if os.path.exists(weights):
        summary["weights"] = "the pretrained MiniLM-L6"
        return folder
    import torch
    from safetensors.torch import save_file
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    model = BertModel(BertConfig.from_json_file(os.path.join(folder, "config.json")), add_pooling_layer=False)
    tensors = {k: v.contiguous() for k, v in model.state_dict().items() if v.dtype == torch.float32}
    save_file(tensors, weights)
    summary["weights"] = "MiniLM-L6's shape, weights drawn at random (the pretrained ones are too big to carry)"
    return folder


def last_rate(output):
    return float(output.strip().splitlines()[-1].split("=", 1)[1])


def speed(env, base):
    """kiln and PyTorch side by side on the GPU: fine-tune at batch 32 x 128, predict at 32 and 1."""
    runs = [("fine-tune b32x128", "train", 32, 128, 20), ("predict b32x128", "predict", 32, 128, 30),
            ("predict b1x128", "predict", 1, 128, 50)]
    if QUICK:
        runs = [(name, kind, min(batch, 4), 16, 2) for name, kind, batch, _, _ in runs]
    figures = {}
    for name, kind, batch, seq, steps in runs:
        shape = ["--model", "minilm", "--base-model", base, "--batch", str(batch), "--seq", str(seq),
                 "--steps", str(steps), "--warmup", "1" if QUICK else "3"]
        kiln = last_rate(run([KILN, "bench", kind, *shape, "--device", DEVICE], env=env).stdout)
        torch = last_rate(run([sys.executable, os.path.join(REPO, "benches/reference/torch_finetune.py"), kind,
                               *shape, "--device", DEVICE], env=env).stdout)
        figures[name] = {"kiln": kiln, "pytorch": torch, "ratio": round(kiln / torch, 3)}
        say(f"{name}: kiln {kiln:.1f} samples/s, PyTorch {torch:.1f}, {kiln / torch:.2f}x")
    summary["samples_per_second"] = figures


INJECTION = ["ignore", "previous", "instructions", "reveal", "system", "prompt", "disregard", "rules",
             "pretend", "jailbreak", "override", "secret"]
BENIGN = ["weather", "recipe", "garden", "travel", "museum", "coffee", "bicycle", "music", "holiday",
          "library", "football", "painting"]


def texts(rows, seed):
    rng = random.Random(seed)
    out = []
    for i in range(rows):
        label, words = ("injection", INJECTION) if i % 2 == 0 else ("benign", BENIGN)
        out.append({"text": " ".join(rng.choice(words) for _ in range(rng.randint(4, 12))), "label": label})
    return out


def fine_tune(env, base):
    data = os.path.join(WORK, "train.jsonl")
    with open(data, "w") as f:
        f.writelines(json.dumps(row) + "\n" for row in texts(300 if QUICK else 3000, 1))
    output = os.path.join(WORK, "model")
    began = time.time()
    done = run([KILN, "train", "--data", data, "--base-model", base, "--epochs", "2", "--batch-size", "16",
                "--max-seq-length", "64", "--learning-rate", "5e-5", "--output", output, "--device", DEVICE,
                "--force"],
               env=env)
    seconds = time.time() - began
    log = done.stderr
    steps = [int(m) for m in re.findall(r"step (\d+)/\d+", log)]
    losses = [float(m) for m in re.findall(r"loss (\d+\.\d+)", log.split("epoch 1:")[0])]
    epochs = re.findall(r"epoch (\d+): train loss (\S+)\s+val loss (\S+)\s+accuracy (\S+)", log)
    summary["fine_tune"] = {"seconds": round(seconds, 1), "steps": max(steps or [0]),
                            "epochs": [{"epoch": int(e), "train_loss": float(t), "val_loss": float(v),
                                        "accuracy": float(a)} for e, t, v, a in epochs]}
    where = next((line for line in log.splitlines() if line.startswith("training ")), "no such line")
    check("the run trained on the device asked for", where.endswith(f"on {DEVICE}:0" if DEVICE == "cuda" else f"on {DEVICE}"), where)
    first, last = (losses[0], losses[-1]) if losses else (None, None)
    check("the training loss falls",
          epochs and float(epochs[-1][1]) < float(epochs[0][1]) and (first is None or last < first),
          f"first steps' loss {first}, epoch train losses {[float(e[1]) for e in epochs]}")
    accuracy = float(epochs[-1][3]) if epochs else 0.0
    check("validation accuracy above chance", accuracy > (0.5 if QUICK else 0.9), f"accuracy {accuracy} after {len(epochs)} epochs")
    return output


def agreement(env, model):
    rows = 40 if QUICK else 400
    held_out = "".join(json.dumps(row["text"]) + "\n" for row in texts(rows, 99))
    answers = {}
    for device in [DEVICE, "cpu"]:
        out = run([KILN, "predict", "--model", model, "--device", device], env=env, stdin=held_out).stdout
        answers[device] = [json.loads(line) for line in out.splitlines()]
    gpu, cpu = answers[DEVICE], answers["cpu"]
    same = sum(a["label"] == b["label"] for a, b in zip(gpu, cpu))
    gap = max(abs(a["probabilities"][k] - b["probabilities"][k]) for a, b in zip(gpu, cpu) for k in a["probabilities"])
    check("the GPU and the CPU give the same labels", len(gpu) == len(cpu) == rows and same == rows and gap < 1e-3,
          f"{same} of {len(gpu)} labels agree; largest probability difference {gap:.2e}")


def main():
    os.makedirs(WORK, exist_ok=True)
    folders, missing = library_path()
    env = dict(os.environ, LD_LIBRARY_PATH=":".join(folders + [os.environ.get("LD_LIBRARY_PATH", "")]))
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True).stdout.strip()
    except FileNotFoundError:
        smi = "no nvidia-smi"
    summary["gpu"] = smi
    say(f"GPU: {smi}")
    ldd = subprocess.run(["ldd", KILN], capture_output=True, text=True, env=env).stdout
    unresolved = [line.strip() for line in ldd.splitlines() if "not found" in line]
    if DEVICE != "cpu":
        check("CUDA 13 libraries found", not missing, f"in {folders}" if not missing else f"missing {missing}")
        check("the cuda binary's libraries resolve", not unresolved, "all found" if not unresolved else str(unresolved))
    version = run([KILN, "--version"], env=env).stdout.strip()
    summary["kiln"] = version
    base = minilm()
    say(f"weights: {summary['weights']}")
    try:
        speed(env, base)
        model = fine_tune(env, base)
        agreement(env, model)
    finally:
        summary["seconds"] = round(time.time() - started, 1)
        text = json.dumps(summary, indent=2)
        print(text)
        if os.environ.get("OUT"):
            with open(os.path.join(os.environ["OUT"], "gpu-check.json"), "w") as f:
                f.write(text)
    failed = [name for name, c in summary["checks"].items() if not c["ok"]]
    if failed:
        raise SystemExit(f"failed: {', '.join(failed)}")
    say("every check passed")


if __name__ == "__main__":
    main()
