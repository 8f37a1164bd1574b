"""Training throughput: seconds of audio trained on per wall-clock second, per model config.

Runs real optimiser steps (STFT + MSE + rate loss, Adam) of each model on random 1-second
crops, on the CPU with the given threads (and on CUDA when present), in float32 and in
bfloat16 autocast, and prints a table.

    .venv/bin/python benchmarks/train_speed.py [--configs config.yaml config/ship.yaml] [--threads 2]
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from speechcodec.config import load_config, training_configs
from speechcodec.model import CodecModel
from speechcodec.training.losses import normalized_mse, stft_loss


def steps_per_s(model: CodecModel, device: torch.device, batch: int, amp: bool, steps: int) -> float:
    model = model.to(device).train()
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    x = (torch.randn(batch, 1, 16000) * 0.05).to(device)
    times = []
    for _ in range(steps + 2):
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            x_hat, _, bits = model(x)
        loss = stft_loss(x_hat.float(), x) + 2 * normalized_mse(x_hat.float(), x) + 0.01 * bits / 1000
        opt.zero_grad()
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    times = sorted(times[2:])  # the first steps allocate
    return 1.0 / times[len(times) // 2]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=["config.yaml", "config/ship.yaml"])
    parser.add_argument("--bitrate", type=int, default=6000, help="which bitrate's model settings")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    print(f"median step time, batch x 1 s crops; CPU threads: {args.threads}")
    print(f"{'config':<20} {'params':>8} {'device':>6} {'batch':>5} {'precision':>9} {'steps/s':>8} "
          f"{'audio s/s':>9}")
    for path in args.configs:
        model_cfg, train_cfg, _ = training_configs(load_config(path), args.bitrate)
        for device in devices:
            batch = train_cfg.batch_size if device.type == "cpu" else max(64, train_cfg.batch_size)
            for amp in (False, True):
                torch.manual_seed(0)
                model = CodecModel(model_cfg)
                params = sum(p.numel() for p in model.parameters())
                rate = steps_per_s(model, device, batch, amp, args.steps)
                print(f"{path:<20} {params / 1e6:>7.2f}M {device.type:>6} {batch:>5} "
                      f"{'bf16' if amp else 'fp32':>9} {rate:>8.2f} {rate * batch:>9.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
