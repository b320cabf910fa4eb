#!/usr/bin/env python3
"""GPU training throughput: the same GPT in PyTorch (eager and torch.compile) and in Forge.

Goal. This is the PyTorch side of Forge's GPU benchmark. Forge's CUDA trainer should train
this model at least as fast as PyTorch eager and aim past torch.compile; for reference, llm.c
reports roughly 50-60% MFU for GPT-2 (124M) training on H100-class GPUs.

The model is the one bench/pytorch_train_reference.py trains on CPU (and the one Forge
trains): GPT-2 style, pre-LayerNorm (eps 1e-5), GELU (tanh) MLP, learned positions, tied
embeddings (wte is the output head), biases everywhere. Training: AdamW betas (0.9, 0.95),
eps 1e-8, weight decay 0.1 on the 2-D tensors only, gradient clipping at norm 1.0, random
tokens. On CUDA the forward pass and loss run under bf16 autocast with fp32 master weights,
the optimizer is the fused AdamW where this PyTorch has it, TF32 is allowed for fp32 matmuls,
and attention is F.scaled_dot_product_attention(is_causal=True) (PyTorch's flash /
memory-efficient SDPA kernels). Older PyTorch without SDPA falls back to a manual causal
softmax attention; the script says which path it used.

Each step is timed with torch.cuda.synchronize() on both sides; the report gives the median
step time, tokens/s and MFU (nanoGPT's estimate_mfu formula, printed with the results).

On the lent GPU machine, from the repository root (`python3` there has PyTorch with CUDA):

    # optional, for the side-by-side: build Forge's GPU bench (needs nvcc and Forge's
    # libraries; where they are missing, scripts/gpu-check torch runs this script with the
    # bench from a bundle made by scripts/gpu-bundle)
    cmake -S . -B build -DCMAKE_BUILD_TYPE=Release && cmake --build build -j16 \\
        --target forge-bench-gpu-train
    # PyTorch eager + torch.compile, and Forge when build/bin/forge-bench-gpu-train exists
    # (one Forge row per --forge-attention entry: flash, gemm and fused by default)
    python3 bench/torch_gpu_reference.py --preset gpt2-124m-shape --batch 8 --seq 1024 \\
        --json "$OUT/torch_gpu_reference.json"

CPU smoke check (no GPU, no autocast, MFU "n/a"):

    /usr/bin/python3 bench/torch_gpu_reference.py --device cpu --preset tiny --batch 2 \\
        --seq 64 --steps 3 --warmup 1 --modes eager [--profile]
"""
import argparse
import contextlib
import inspect
import json
import math
import os
import re
import statistics
import subprocess
import sys
import time

try:
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
except ImportError:
    sys.exit("PyTorch is not installed for this interpreter (Debian: apt-get install python3-torch)")

# The presets are shared with the CPU reference (plain stdlib module next to this file).
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pytorch_train_reference import PRESETS  # noqa: E402

# Peak dense bf16 tensor-core TFLOP/s by device-name substring, first match wins.
PEAK_BF16_TFLOPS = (
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.0),  # SXM
    ("H200", 989.0),
)

FORGE_LINE = re.compile(r"forge-gpu-train:\s*tokens_per_second=(\S+)\s+mfu=(\S+)\s+step_ms_median=(\S+)")


# ----------------------------------------------------------------------------------------------
# Model: the same definitions as bench/pytorch_train_reference.py (there they live inside a
# function, so they are copied here), with two changes that do not alter the math: tensors are
# created on the input's device, and attention can use F.scaled_dot_product_attention.


def has_sdpa():
    return hasattr(F, "scaled_dot_product_attention")


class Block(nn.Module):
    def __init__(self, C, H, use_sdpa):
        super().__init__()
        self.C, self.H, self.use_sdpa = C, H, use_sdpa
        self.ln_1 = nn.LayerNorm(C)
        self.c_attn = nn.Linear(C, 3 * C)
        self.c_proj = nn.Linear(C, C)
        self.ln_2 = nn.LayerNorm(C)
        self.c_fc = nn.Linear(C, 4 * C)
        self.mlp_proj = nn.Linear(4 * C, C)

    def forward(self, x):
        C, H = self.C, self.H
        B_, T_, _ = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(C, dim=2)
        q = q.view(B_, T_, H, C // H).transpose(1, 2)
        k = k.view(B_, T_, H, C // H).transpose(1, 2)
        v = v.view(B_, T_, H, C // H).transpose(1, 2)
        if self.use_sdpa:
            # Default scale is 1/sqrt(C // H), as in the manual path.
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            att = (q @ k.transpose(-2, -1)) / math.sqrt(C // H)
            mask = torch.ones(T_, T_, dtype=torch.bool, device=x.device).tril()
            att = att.masked_fill(~mask, float("-inf")).softmax(dim=-1)
            y = att @ v
        y = y.transpose(1, 2).contiguous().view(B_, T_, C)
        x = x + self.c_proj(y)
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))


class GPT(nn.Module):
    def __init__(self, shape, use_sdpa):
        super().__init__()
        C, H, L = shape["width"], shape["heads"], shape["layers"]
        self.V = shape["vocab"]
        self.wte = nn.Embedding(self.V, C)
        self.wpe = nn.Embedding(shape["context"], C)
        self.h = nn.ModuleList(Block(C, H, use_sdpa) for _ in range(L))
        self.ln_f = nn.LayerNorm(C)
        # GPT-2's initialisation, as Forge's (worker/engine/gpt_params.cc): weights N(0, 0.02),
        # the two residual projections N(0, 0.02 / sqrt(2L)), biases 0, LayerNorm 1 and 0.
        for name, p in self.named_parameters():
            if p.dim() < 2:
                continue
            std = 0.02 / math.sqrt(2 * L) if name.endswith(("c_proj.weight", "mlp_proj.weight")) else 0.02
            nn.init.normal_(p, 0.0, std)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, idx, targets):
        pos = torch.arange(idx.shape[1], device=idx.device)
        x = self.wte(idx) + self.wpe(pos)
        for b in self.h:
            x = b(x)
        logits = self.ln_f(x) @ self.wte.weight.t()  # tied embeddings: wte is the head
        return F.cross_entropy(logits.view(-1, self.V), targets.view(-1))


def make_optimizer(model, device):
    """AdamW as Forge's: betas (0.9, 0.95), eps 1e-8, decay 0.1 on 2-D tensors only.

    Returns (optimizer, description). Uses the fused CUDA kernel where this PyTorch has it.
    """
    params = list(model.parameters())
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": 0.1},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    kwargs = dict(lr=3e-4, betas=(0.9, 0.95), eps=1e-8)
    if device.type == "cuda" and "fused" in inspect.signature(torch.optim.AdamW).parameters:
        return torch.optim.AdamW(groups, fused=True, **kwargs), "AdamW (fused)"
    return torch.optim.AdamW(groups, **kwargs), "AdamW (default implementation)"


# ----------------------------------------------------------------------------------------------
# Measurement


def flops_per_token(n_params_nanogpt, shape, seq):
    """nanoGPT's estimate_mfu: 6*N + 12*L*H*Q*T (N excludes wpe, as its get_num_params())."""
    L, H = shape["layers"], shape["heads"]
    Q = shape["width"] // H
    return 6 * n_params_nanogpt + 12 * L * H * Q * seq


def attention_description(use_sdpa, device):
    if not use_sdpa:
        return (f"manual causal softmax (q@k^T, mask, softmax, @v): F.scaled_dot_product_attention "
                f"is not in torch {torch.__version__}")
    if device.type == "cuda":
        b = torch.backends.cuda
        return ("F.scaled_dot_product_attention(is_causal=True): PyTorch's fused SDPA kernels "
                f"(flash enabled={b.flash_sdp_enabled()}, "
                f"memory-efficient enabled={b.mem_efficient_sdp_enabled()})")
    return "F.scaled_dot_product_attention(is_causal=True) on CPU"


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_steps(model, opt, x, y, device, autocast, warmup, steps):
    """Runs warmup + steps training steps; returns (step seconds after warm-up, losses)."""
    amp = (torch.autocast(device_type="cuda", dtype=torch.bfloat16) if autocast
           else contextlib.nullcontext())
    times, losses = [], []
    for i in range(warmup + steps):
        sync(device)
        t0 = time.perf_counter()
        with amp:
            loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync(device)
        t1 = time.perf_counter()
        if i >= warmup:
            times.append(t1 - t0)
        losses.append(loss.item())  # outside the timed region
    return times, losses


def fresh_run(args, shape, device, use_sdpa):
    """A freshly initialised model, its optimizer (and its description) and one random batch,
    the same for every run."""
    torch.manual_seed(7)
    model = GPT(shape, use_sdpa).to(device)
    opt, opt_desc = make_optimizer(model, device)
    g = torch.Generator().manual_seed(7)
    V = shape["vocab"]
    x = torch.randint(0, V, (args.batch, args.seq), generator=g).to(device)
    y = torch.randint(0, V, (args.batch, args.seq), generator=g).to(device)
    return model, opt, opt_desc, x, y


def run_torch_mode(mode, args, shape, device, use_sdpa, autocast):
    """Trains a fresh model in `mode` ("eager" or "compile"); returns a result dict."""
    model, opt, opt_desc, x, y = fresh_run(args, shape, device, use_sdpa)
    if mode == "compile":
        model = torch.compile(model)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t_start = time.perf_counter()
    times, losses = train_steps(model, opt, x, y, device, autocast, args.warmup, args.steps)
    wall = time.perf_counter() - t_start
    step_s = statistics.median(times)
    result = {
        "implementation": f"PyTorch {torch.__version__} {'eager' if mode == 'eager' else 'torch.compile'}",
        "mode": mode,
        "optimizer": opt_desc,
        "step_ms_median": step_s * 1e3,
        "step_ms_all": [t * 1e3 for t in times],
        "tokens_per_second": args.batch * args.seq / step_s,
        "loss_first": losses[0],
        "loss_last": losses[-1],
        "wall_s_including_warmup": wall,
    }
    if device.type == "cuda":
        result["max_memory_allocated_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    del model, opt
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


def profile_eager(args, shape, device, use_sdpa, autocast, steps=3):
    """torch.profiler over `steps` eager training steps after two warm-up ones: the kernels that
    took the most device time (CPU time on CPU), as a table, for comparing with Forge's
    forge-bench-gpu-train --profile."""
    from torch.profiler import ProfilerActivity, profile
    model, opt, _, x, y = fresh_run(args, shape, device, use_sdpa)
    train_steps(model, opt, x, y, device, autocast, 2, 0)
    activities = [ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    with profile(activities=activities) as prof:
        train_steps(model, opt, x, y, device, autocast, 0, steps)
    del model, opt
    averages = prof.key_averages()
    # Newer PyTorch names the column device_time_total; older ones cuda_time_total.
    keys = ("device_time_total", "cuda_time_total") if device.type == "cuda" else ("cpu_time_total",)
    error = None
    for key in keys:
        try:
            table = averages.table(sort_by=key, row_limit=30)
        except (AttributeError, KeyError, ValueError) as e:
            error = e
            continue
        return f"sorted by {key}, {steps} steps:\n{table}"
    return f"profile table unavailable ({error})"


def run_forge(exe, args, attention, timeout_s):
    """Runs Forge's GPU bench with one attention implementation; returns (result dict or
    None, status message)."""
    cmd = [exe, "--preset", args.preset, "--batch", str(args.batch), "--seq", str(args.seq),
           "--steps", str(args.steps), "--warmup", str(args.warmup), f"--attention={attention}"]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, f"Forge: {' '.join(cmd)} failed: {e}"
    lines = [l for l in p.stdout.splitlines() if l.strip()]
    m = FORGE_LINE.search(lines[-1]) if lines else None
    if p.returncode != 0 or not m:
        tail = "\n    ".join((p.stdout + p.stderr).strip().splitlines()[-10:])
        return None, f"Forge: {' '.join(cmd)} exited {p.returncode} without a result line:\n    {tail}"
    tps, mfu, step_ms = (float(v) for v in m.groups())
    return ({"implementation": f"Forge (attention: {attention})", "mode": "forge",
             "attention": attention, "step_ms_median": step_ms,
             "tokens_per_second": tps, "mfu_reported_by_forge": mfu},
            f"Forge: {' '.join(cmd)}")


def peak_tflops(args, device):
    """Peak dense bf16 TFLOP/s: --peak-tflops, else from the device name; None on CPU."""
    if device.type != "cuda":
        return None, "n/a on CPU"
    name = torch.cuda.get_device_name(device)
    if args.peak_tflops != "auto":
        return float(args.peak_tflops), f"{args.peak_tflops} TFLOP/s (from --peak-tflops)"
    for key, tf in PEAK_BF16_TFLOPS:
        if key in name:
            return tf, f"{tf:g} TFLOP/s dense bf16 (auto from device name '{name}')"
    sys.exit(f"unknown peak bf16 TFLOP/s for '{name}': pass --peak-tflops")


def fmt_ratio(row, eager):
    return f"{row['tokens_per_second'] / eager['tokens_per_second']:.2f}x" if eager else "n/a"


# ----------------------------------------------------------------------------------------------


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="gpt2-124m-shape", choices=sorted(PRESETS))
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=30, help="timed steps")
    ap.add_argument("--warmup", type=int, default=5, help="untimed steps before them")
    ap.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu")
    ap.add_argument("--modes", default="eager,compile", help="comma list of eager, compile")
    ap.add_argument("--peak-tflops", default="auto",
                    help="peak dense bf16 TFLOP/s for MFU (auto: 989 for H100 SXM / H200, 756 for H100 PCIe)")
    ap.add_argument("--forge", default=None,
                    help="Forge GPU bench binary (default: build/bin/forge-bench-gpu-train if present)")
    ap.add_argument("--no-forge", action="store_true", help="do not run Forge's GPU bench")
    ap.add_argument("--forge-attention", default="flash,gemm,fused",
                    help="comma list of Forge attention implementations to run, one row each "
                         "(flash: fused on tensor cores; gemm: tensor-core products with the "
                         "scores in memory; fused: CUDA-core kernels; auto)")
    ap.add_argument("--forge-timeout", type=int, default=600, help="seconds, per Forge run")
    ap.add_argument("--json", default=None, help="also write the results to this JSON file")
    ap.add_argument("--profile", action="store_true",
                    help="also print torch.profiler's table of the eager model's kernels (3 "
                         "steps), to set beside forge-bench-gpu-train --profile")
    args = ap.parse_args()
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    args.forge_attention = [a.strip() for a in args.forge_attention.split(",") if a.strip()]
    for a in args.forge_attention:
        if a not in ("auto", "flash", "gemm", "fused"):
            ap.error(f"--forge-attention: unknown implementation {a!r} (auto, flash, gemm, fused)")
    for m in args.modes:
        if m not in ("eager", "compile"):
            ap.error(f"unknown mode {m!r} (eager, compile)")
    if args.seq > PRESETS[args.preset]["context"]:
        ap.error(f"--seq {args.seq} exceeds the context of preset {args.preset} "
                 f"({PRESETS[args.preset]['context']})")
    if args.steps < 1 or args.warmup < 0 or args.batch < 1 or args.seq < 1:
        ap.error("--steps, --batch and --seq must be >= 1, --warmup >= 0")
    return args


def main():
    args = parse_args()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    shape = PRESETS[args.preset]
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit(f"--device {args.device}: torch {torch.__version__} sees no CUDA device (try --device cpu)")
    peak, peak_desc = peak_tflops(args, device)

    # Forge first, while the GPU is still untouched by this process.
    forge_rows, forge_status = [], None
    exe = args.forge or os.path.join(root, "build", "bin", "forge-bench-gpu-train")
    if args.no_forge:
        forge_status = "Forge: skipped (--no-forge)"
    elif device.type != "cuda":
        forge_status = "Forge: skipped (its GPU bench needs --device cuda)"
    elif not os.path.exists(exe):
        forge_status = f"Forge: {exe} not found (build it for the side-by-side); showing PyTorch only"
    else:
        statuses = []
        for attention in args.forge_attention:
            row, status = run_forge(exe, args, attention, args.forge_timeout)
            statuses.append(status)
            if row is not None:
                forge_rows.append(row)
        forge_status = "\n".join(statuses)

    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # fp32 matmuls (outside autocast) on TF32
        torch.backends.cudnn.allow_tf32 = True
        device_name = torch.cuda.get_device_name(device)
    else:
        device_name = f"CPU ({torch.get_num_threads()} threads)"
    autocast = device.type == "cuda"
    use_sdpa = has_sdpa()

    # Parameter counts (wte counted once: it is also the head).
    probe = GPT(shape, use_sdpa)
    n_params = sum(p.numel() for p in probe.parameters())
    n_params_nanogpt = n_params - probe.wpe.weight.numel()
    del probe
    fpt = flops_per_token(n_params_nanogpt, shape, args.seq)

    L, H, C = shape["layers"], shape["heads"], shape["width"]
    print(f"device: {device_name}; torch {torch.__version__}"
          + (f", CUDA {torch.version.cuda}" if device.type == "cuda" else ""))
    print(f"model: preset {args.preset} (L={L}, H={H}, C={C}, context={shape['context']}, "
          f"vocab={shape['vocab']}), {n_params:,} parameters")
    print(f"run: batch {args.batch} x seq {args.seq} random tokens, {args.warmup} warm-up + "
          f"{args.steps} timed steps, median step (torch.cuda.synchronize() around each step on CUDA)")
    print("precision: " + ("bf16 autocast for forward + loss, fp32 master weights, TF32 allowed"
                           if autocast else "fp32 (no autocast on CPU)"))
    print(f"attention: {attention_description(use_sdpa, device)}")
    print(f"MFU: flops/token = 6*N + 12*L*H*Q*T (nanoGPT estimate_mfu), N = {n_params_nanogpt:,} "
          f"(parameters less wpe), L={L}, H={H}, Q=C/H={C // H}, T=seq={args.seq} "
          f"-> {fpt / 1e6:.1f} MFLOP/token; peak {peak_desc}")

    rows, notes = [], []
    for mode in args.modes:
        if mode == "compile" and not hasattr(torch, "compile"):
            notes.append(f"compile: unavailable in torch {torch.__version__}")
            print(notes[-1])
            continue
        r = run_torch_mode(mode, args, shape, device, use_sdpa, autocast)
        mem = (f", max memory {r['max_memory_allocated_gib']:.1f} GiB"
               if "max_memory_allocated_gib" in r else "")
        print(f"{r['implementation']}: {r['optimizer']}, loss {r['loss_first']:.3f} -> "
              f"{r['loss_last']:.3f}, {r['wall_s_including_warmup']:.1f} s with warm-up{mem}")
        rows.append(r)
    print(forge_status)
    rows.extend(forge_rows)
    if args.profile:
        print("\nPyTorch eager, profiled (torch.profiler):")
        print(profile_eager(args, shape, device, use_sdpa, autocast))

    # One MFU formula for every row (Forge's own figure is shown too when it differs).
    for r in rows:
        r["mfu"] = fpt * r["tokens_per_second"] / (peak * 1e12) if peak else None
    eager = next((r for r in rows if r["mode"] == "eager"), None)
    for r in rows:
        r["ratio_vs_pytorch_eager"] = (r["tokens_per_second"] / eager["tokens_per_second"]
                                       if eager else None)

    print()
    print("| implementation | step ms (median) | tokens/s | MFU | ratio vs PyTorch eager |")
    print("|---|---|---|---|---|")
    for r in rows:
        mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "n/a"
        print(f"| {r['implementation']} | {r['step_ms_median']:.2f} | {r['tokens_per_second']:,.0f} "
              f"| {mfu} | {fmt_ratio(r, eager)} |")
    for forge_row in forge_rows:
        if forge_row["mfu"] is not None and \
                abs(forge_row["mfu_reported_by_forge"] - forge_row["mfu"]) > 0.005:
            print(f"({forge_row['implementation']} reports its own MFU as "
                  f"{forge_row['mfu_reported_by_forge']:.4f}; the table uses the formula above "
                  "for every row)")

    if args.json:
        out = {
            "preset": args.preset, "shape": shape, "batch": args.batch, "seq": args.seq,
            "steps": args.steps, "warmup": args.warmup, "device": device_name,
            "torch_version": torch.__version__,
            "cuda_version": torch.version.cuda if device.type == "cuda" else None,
            "autocast_bf16": autocast, "attention": attention_description(use_sdpa, device),
            "n_params": n_params, "n_params_mfu": n_params_nanogpt,
            "flops_per_token": fpt, "flops_formula": "6*N + 12*L*H*Q*T (nanoGPT estimate_mfu)",
            "peak_tflops": peak, "notes": notes, "forge_status": forge_status, "results": rows,
        }
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
