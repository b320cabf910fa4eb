#!/usr/bin/python3
"""Side-by-side CPU training throughput: the same GPT in PyTorch and in Forge.

Runs the Forge benchmark (build/bin/forge-bench-train) and, when PyTorch is installed
(Debian: apt-get install python3-torch), the same model in PyTorch eager mode: GPT-2 style,
pre-LayerNorm, GELU (tanh) MLP, learned positions, tied embeddings, AdamW, same batch and
sequence length, random byte tokens. PyTorch is timed at each thread count from 1 to nproc
and its best is the reference. Prints a table and the ratio Forge / PyTorch.

    bench/pytorch_train_reference.py --preset tiny --batch 8 --seq 128
    bench/pytorch_train_reference.py --preset gpt2-124m-shape --batch 4 --seq 64 --steps 5
"""
import argparse
import math
import os
import re
import statistics
import subprocess
import sys
import time

PRESETS = {
    "tiny": dict(layers=4, heads=4, width=256, context=128, vocab=256),
    "gpt2-124m-shape": dict(layers=12, heads=12, width=768, context=1024, vocab=50304),
}


def torch_tokens_per_second(shape, batch, seq, steps, threads):
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    torch.set_num_threads(threads)
    torch.manual_seed(7)
    C, H, L, V, T = shape["width"], shape["heads"], shape["layers"], shape["vocab"], shape["context"]

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln_1 = nn.LayerNorm(C)
            self.c_attn = nn.Linear(C, 3 * C)
            self.c_proj = nn.Linear(C, C)
            self.ln_2 = nn.LayerNorm(C)
            self.c_fc = nn.Linear(C, 4 * C)
            self.mlp_proj = nn.Linear(4 * C, C)

        def forward(self, x):
            B_, T_, _ = x.shape
            q, k, v = self.c_attn(self.ln_1(x)).split(C, dim=2)
            q = q.view(B_, T_, H, C // H).transpose(1, 2)
            k = k.view(B_, T_, H, C // H).transpose(1, 2)
            v = v.view(B_, T_, H, C // H).transpose(1, 2)
            att = (q @ k.transpose(-2, -1)) / math.sqrt(C // H)
            mask = torch.ones(T_, T_, dtype=torch.bool).tril()
            att = att.masked_fill(~mask, float("-inf")).softmax(dim=-1)
            y = (att @ v).transpose(1, 2).contiguous().view(B_, T_, C)
            x = x + self.c_proj(y)
            return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))

    class GPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.wte = nn.Embedding(V, C)
            self.wpe = nn.Embedding(T, C)
            self.h = nn.ModuleList(Block() for _ in range(L))
            self.ln_f = nn.LayerNorm(C)

        def forward(self, idx, targets):
            pos = torch.arange(idx.shape[1])
            x = self.wte(idx) + self.wpe(pos)
            for b in self.h:
                x = b(x)
            logits = self.ln_f(x) @ self.wte.weight.t()
            return F.cross_entropy(logits.view(-1, V), targets.view(-1))

    model = GPT()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.1)
    x = torch.randint(0, V, (batch, seq))
    y = torch.randint(0, V, (batch, seq))
    times = []
    for i in range(steps + 2):  # two warm-up steps
        t0 = time.perf_counter()
        loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i >= 2:
            times.append(time.perf_counter() - t0)
    return batch * seq / statistics.median(times)


def forge_tokens_per_second(root, preset, batch, seq, steps, threads):
    exe = os.path.join(root, "build", "bin", "forge-bench-train")
    out = subprocess.run([exe, f"--preset={preset}", f"--batch={batch}", f"--seq={seq}",
                          f"--steps={steps}", f"--threads={threads}"],
                         capture_output=True, text=True, check=True).stdout
    m = re.search(r"^tokens_per_second:\s*([0-9.]+)", out, re.M)
    if not m:
        sys.exit(f"forge-bench-train printed no tokens_per_second line:\n{out}")
    return float(m.group(1))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="tiny", choices=sorted(PRESETS))
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--steps", type=int, default=20)
    args = ap.parse_args()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    nproc = os.cpu_count() or 1
    rows = []
    for t in range(1, nproc + 1):
        rows.append(("forge", t, forge_tokens_per_second(root, args.preset, args.batch, args.seq, args.steps, t)))
    try:
        import torch  # noqa: F401
        for t in range(1, nproc + 1):
            rows.append((f"pytorch {torch.__version__} eager", t,
                         torch_tokens_per_second(PRESETS[args.preset], args.batch, args.seq, args.steps, t)))
    except ImportError:
        print("PyTorch is not installed (apt-get install python3-torch); showing Forge only")
    print(f"preset {args.preset}, batch {args.batch}, seq {args.seq}, median of {args.steps} steps, {nproc} cores")
    print("| trainer | threads | tokens/s |")
    print("|---|---|---|")
    for name, t, tps in rows:
        print(f"| {name} | {t} | {tps:,.0f} |")
    best_forge = max(r[2] for r in rows if r[0] == "forge")
    torch_rows = [r[2] for r in rows if r[0].startswith("pytorch")]
    if torch_rows:
        print(f"ratio forge best / pytorch best: {best_forge / max(torch_rows):.2f}x")


if __name__ == "__main__":
    main()
