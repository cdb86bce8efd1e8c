#!/usr/bin/python3
"""A plain PyTorch implementation of dartserve's DART model and sampler.

Written the way a researcher would: nn.Modules, a per-layer KV cache grown with torch.cat, and
whole batches that start and finish together (static batching). It loads the same checkpoint
folders (config.json + model.safetensors) as the C++ server and draws the same noise for the same
seed (torch's CPU generator), so it serves two purposes:

  * an independent numerical cross-check of the C++ model (tests/model/reference_test.cc):
      dart_reference.py --checkpoint DIR --requests R.json --expect IMAGES.safetensors
  * the peer in the benchmarks:
      dart_reference.py --checkpoint DIR --bench --batch 16 --images 64

Needs only Debian's python3-torch.
"""
import argparse
import json
import math
import struct
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}


def load_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        buf = bytearray(data[base + begin:base + end])
        t = torch.frombuffer(buf, dtype=DTYPES[info["dtype"]]) if buf else torch.empty(0)
        out[name] = t.reshape(info["shape"]).float()
    return out


def save_safetensors(path, tensors):
    header, blobs, offset = {}, [], 0
    for name, t in tensors.items():
        b = t.contiguous().float().numpy().tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [offset, offset + len(b)]}
        blobs.append(b)
        offset += len(b)
    h = json.dumps(header).encode()
    h += b" " * ((8 - (8 + len(h)) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


class Config:
    def __init__(self, d):
        self.image_size = d.get("image_size", 28)
        self.channels = d.get("channels", 1)
        self.patch = d.get("patch_size", 4)
        self.T = d.get("num_steps", 16)
        self.snr_shift = d.get("snr_shift", 1.0)
        self.width = d.get("width", 256)
        self.depth = d.get("depth", 6)
        self.heads = d.get("heads", 4)
        self.mlp_ratio = d.get("mlp_ratio", 8.0 / 3.0)
        self.rope_theta = d.get("rope_theta", 100.0)
        self.conditioning = d.get("conditioning", "class")
        self.num_classes = d.get("num_classes", 10)
        self.grid = self.image_size // self.patch
        self.K = self.grid * self.grid
        self.token_dim = self.patch * self.patch * self.channels
        self.head_dim = self.width // self.heads
        self.hidden = (int(self.mlp_ratio * self.width + 0.5) + 31) // 32 * 32


def alphas(cfg):
    a = [1.0]
    for t in range(1, cfg.T):
        c = math.cos(math.pi / 2 * t / cfg.T) ** 2
        snr = c / (1 - c) / cfg.snr_shift ** 2
        a.append(snr / (1 + snr))
    a.append(0.0)
    return a


def rms_norm(x, weight, eps=1e-6):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def rope_tables(cfg):
    quarter = cfg.head_dim // 4
    freqs = cfg.rope_theta ** (-torch.arange(quarter, dtype=torch.float64) / quarter)
    idx = torch.arange(cfg.K)
    rows = (idx // cfg.grid).double()[:, None]
    cols = (idx % cfg.grid).double()[:, None]
    angles = torch.cat([rows * freqs, cols * freqs], 1)
    return torch.cos(angles).float(), torch.sin(angles).float()


def apply_rope(x, cos, sin):
    # x: [B, H, K, hd]; rotate interleaved pairs.
    x0, x1 = x[..., 0::2], x[..., 1::2]
    out = torch.empty_like(x)
    out[..., 0::2] = x0 * cos - x1 * sin
    out[..., 1::2] = x0 * sin + x1 * cos
    return out


class Block(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        d = cfg.width
        self.norm1 = nn.Parameter(torch.ones(d))
        self.norm2 = nn.Parameter(torch.ones(d))
        self.q_norm = nn.Parameter(torch.ones(cfg.head_dim))
        self.k_norm = nn.Parameter(torch.ones(cfg.head_dim))
        self.qkv = nn.Linear(d, 3 * d, bias=False)
        self.proj = nn.Linear(d, d, bias=False)
        self.w_gate_up = nn.Linear(d, 2 * cfg.hidden, bias=False)
        self.w_down = nn.Linear(cfg.hidden, d, bias=False)
        self.ada = nn.Linear(d, 6 * d)

    def forward(self, x, c, rope, cache):
        """x: [B, K, D] the new block; cache: dict with 'k', 'v' ([B, H, L, hd]) or empty."""
        B, K, D = x.shape
        H, hd = self.cfg.heads, self.cfg.head_dim
        s1, sc1, g1, s2, sc2, g2 = self.ada(c).unsqueeze(1).chunk(6, -1)
        h = rms_norm(x, self.norm1) * (1 + sc1) + s1
        q, k, v = self.qkv(h).view(B, K, 3, H, hd).permute(2, 0, 3, 1, 4)
        q = apply_rope(rms_norm(q, self.q_norm), *rope)
        k = apply_rope(rms_norm(k, self.k_norm), *rope)
        if cache:
            k = torch.cat([cache["k"], k], 2)
            v = torch.cat([cache["v"], v], 2)
        cache["k"], cache["v"] = k, v
        att = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(hd), -1) @ v
        x = x + g1 * self.proj(att.transpose(1, 2).reshape(B, K, D))
        h = rms_norm(x, self.norm2) * (1 + sc2) + s2
        gate, up = self.w_gate_up(h).chunk(2, -1)
        return x + g2 * self.w_down(F.silu(gate) * up)


class Dart(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        d = cfg.width
        self.in_proj = nn.Linear(cfg.token_dim, d)
        self.step_embed = nn.Embedding(cfg.T, d)
        self.cond_embed = nn.Embedding(cfg.num_classes + 1 if cfg.conditioning == "class" else 1, d)
        self.blocks = nn.ModuleList([Block(cfg) for _ in range(cfg.depth)])
        self.final_norm = nn.Parameter(torch.ones(d))
        self.final_ada = nn.Linear(d, 2 * d)
        self.out_proj = nn.Linear(d, cfg.token_dim)
        self.rope = rope_tables(cfg)

    def load(self, tensors):
        own = dict(self.named_parameters())
        for name, t in tensors.items():
            key = name
            for norm in ("norm1", "norm2", "q_norm", "k_norm", "final_norm"):
                key = key.replace(norm + ".weight", norm)
            own[key].data.copy_(t)

    def step(self, x, block, cond_ids, caches):
        c = F.silu(self.cond_embed(cond_ids))
        h = self.in_proj(x) + self.step_embed.weight[block]
        for blk, cache in zip(self.blocks, caches):
            h = blk(h, c, self.rope, cache)
        shift, scale = self.final_ada(c).unsqueeze(1).chunk(2, -1)
        return self.out_proj(rms_norm(h, self.final_norm) * (1 + scale) + shift)


def unpatchify(tokens, cfg):
    B, g, p = tokens.shape[0], cfg.grid, cfg.patch
    return (tokens.reshape(B, g, g, cfg.channels, p, p).permute(0, 3, 1, 4, 2, 5)
            .reshape(B, cfg.channels, cfg.image_size, cfg.image_size))


@torch.no_grad()
def generate(model, classes, seeds, guidance=1.0, temperature=1.0):
    """A static batch: every request starts and finishes together."""
    cfg = model.cfg
    a = alphas(cfg)
    B = len(seeds)
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    x = torch.stack([torch.randn(cfg.K, cfg.token_dim, generator=g) for g in gens])
    null = cfg.num_classes if cfg.conditioning == "class" else 0
    cond = torch.tensor([null if c is None else c for c in classes])
    guided = guidance != 1.0
    ids = torch.cat([cond, torch.full_like(cond, null)]) if guided else cond
    caches = [{} for _ in range(cfg.depth)]
    for b in range(cfg.T):
        t = cfg.T - b
        inp = torch.cat([x, x]) if guided else x
        out = model.step(inp, b, ids, caches)
        x0 = out[B:] + guidance * (out[:B] - out[B:]) if guided else out
        if t == 1:
            break
        eps = torch.stack([torch.randn(cfg.K, cfg.token_dim, generator=g) for g in gens]) * temperature
        x = math.sqrt(a[t - 1]) * x0 + math.sqrt(1 - a[t - 1]) * eps
    return unpatchify(x0, cfg).clamp(-1, 1)


def load_model(checkpoint):
    with open(checkpoint + "/config.json") as f:
        cfg = Config(json.load(f))
    model = Dart(cfg)
    model.load(load_safetensors(checkpoint + "/model.safetensors"))
    return model.eval()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--requests", help="JSON list of {class, seed, guidance, temperature}")
    ap.add_argument("--expect", help="safetensors with 'images' [N,C,H,W] to compare against")
    ap.add_argument("--tolerance", type=float, default=1e-4)
    ap.add_argument("--bench", action="store_true")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--guidance", type=float, default=1.0, help="guidance scale of --bench's requests")
    ap.add_argument("--json", help="write benchmark results here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(args.checkpoint)

    if args.requests:
        with open(args.requests) as f:
            reqs = json.load(f)
        images = torch.cat([generate(model, [r.get("class")], [r["seed"]], r.get("guidance", 1.0),
                                     r.get("temperature", 1.0)) for r in reqs])
        if args.expect:
            expected = load_safetensors(args.expect)["images"]
            per_image = (images - expected).abs().flatten(1).max(1).values
            print("per image:", " ".join(f"{d:.2e}" for d in per_image.tolist()))
            diff = per_image.max().item()
            print(f"max abs diff vs C++: {diff:.3e} over {len(reqs)} images")
            return 0 if diff <= args.tolerance else 1
        return 0

    if args.bench:
        n_cls = model.cfg.num_classes if model.cfg.conditioning == "class" else 1
        generate(model, [0] * args.batch, list(range(args.batch)))  # warm-up
        start = time.perf_counter()
        latencies = []
        for first in range(0, args.images, args.batch):
            t0 = time.perf_counter()
            n = min(args.batch, args.images - first)
            generate(model, [i % n_cls for i in range(first, first + n)], list(range(first, first + n)),
                     args.guidance)
            latencies += [time.perf_counter() - t0] * n
        secs = time.perf_counter() - start
        result = {"images": args.images, "batch": args.batch, "guidance": args.guidance, "seconds": secs,
                  "images_per_second": args.images / secs,
                  "mean_latency_s": sum(latencies) / len(latencies)}
        print(json.dumps(result))
        if args.json:
            with open(args.json, "w") as f:
                json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
