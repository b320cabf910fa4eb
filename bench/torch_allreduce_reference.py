#!/usr/bin/python3
"""Reference for forge-bench-allreduce: the same sweep with torch.distributed (gloo backend).

Spawns --ranks processes on 127.0.0.1 with torch.multiprocessing, sweeps 4 KiB..64 MiB in x4
steps, and prints the same nccl-tests style table from rank 0: median time per all_reduce,
algbw = bytes / time, busbw = algbw * 2(n-1)/n, #wrong (elements off the exact sum, all ranks).

    python3 bench/torch_allreduce_reference.py [--ranks 2] [--min-bytes 4096] [--max-bytes 67108864]
"""
import argparse
import os
import socket
import statistics
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(rank, world, port, args):
    os.environ["GLOO_SOCKET_IFNAME"] = "lo"
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world)
    if rank == 0:
        print(f"# torch {torch.__version__} torch.distributed gloo: {world} processes on 127.0.0.1")
        print("# %12s %12s %6s %12s %10s %10s %8s" % ("size(B)", "count", "type", "time(us)",
                                                     "algbw(GB/s)", "busbw(GB/s)", "#wrong"))
    ranks_sum = world * (world + 1) / 2
    nbytes = args.min_bytes
    while nbytes <= args.max_bytes:
        count = nbytes // 4
        pattern = (torch.arange(count) % 7 + 1).to(torch.float32)
        inp = pattern * (rank + 1)
        expected = pattern * ranks_sum
        data = torch.empty_like(inp)
        iters = args.iters or max(10, min(200, (256 << 20) // nbytes))
        times = []
        for it in range(-args.warmup, iters):
            data.copy_(inp)
            dist.barrier()
            t0 = time.perf_counter()
            dist.all_reduce(data)
            t1 = time.perf_counter()
            if it >= 0:
                times.append((t1 - t0) * 1e6)
        wrong = torch.tensor([float((data != expected).sum().item())])
        dist.all_reduce(wrong)
        med = statistics.median(times)
        algbw = nbytes / (med * 1e3)
        busbw = algbw * 2 * (world - 1) / world
        if rank == 0:
            print("  %12d %12d %6s %12.1f %10.3f %10.3f %8d" % (nbytes, count, "float", med, algbw,
                                                             busbw, int(wrong.item())), flush=True)
        nbytes *= 4
    dist.destroy_process_group()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--min-bytes", type=int, default=4 << 10)
    p.add_argument("--max-bytes", type=int, default=64 << 20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--iters", type=int, default=0)
    args = p.parse_args()
    mp.spawn(run, args=(args.ranks, free_port(), args), nprocs=args.ranks, join=True)


if __name__ == "__main__":
    main()
