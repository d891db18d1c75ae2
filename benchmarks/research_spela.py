"""Research loop for SPELA's streaming defaults: variants of the rule, prequential, one pass.

Not the product: a compact re-implementation with knobs, so that candidate changes can be
measured on the four shared streams before they are folded into ``spela_stream``.

    python -m benchmarks.research_spela --streams elec2,letter --variants base,norm
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from typing import Any

import numpy as np
import torch

from benchmarks.streams import load_stream
from spela_stream.class_vectors import ClassVectors
from spela_stream.scaling import Standardiser

SLOPE = 1e-3


def run(X: np.ndarray, y: list[Any], cfg: dict[str, Any]) -> dict[str, Any]:
    """Prequential run of one variant; returns final accuracy per layer and for the policy."""
    torch.manual_seed(cfg.get("seed", 0))
    hidden = cfg["hidden"]
    lr = cfg["lr"]
    widths = (X.shape[1], *hidden)
    gen = torch.Generator().manual_seed(cfg.get("seed", 0))
    Ws, bs, Vs = [], [], []
    beta = cfg.get("beta", 0.999)
    R = [torch.zeros(w) for w in widths[1:]]
    C = [torch.zeros(w) for w in widths[:-1]]
    RB = [torch.zeros(w) for w in widths[1:]]
    t_step = 0
    HM = [torch.zeros(w) for w in widths[:-1]]
    HV = [torch.zeros(w) for w in widths[:-1]]
    hnorm = cfg.get("hnorm", None)
    slope = cfg.get("slope", SLOPE)
    hbeta = cfg.get("hbeta", 0.999)
    OM = [torch.zeros(w) for w in widths[1:]]
    OV = [torch.zeros(w) for w in widths[1:]]
    for i in range(len(hidden)):
        bound = math.sqrt(6.0 / widths[i]) * cfg.get("init_gain", 1.0)
        Ws.append((torch.rand(widths[i + 1], widths[i], generator=gen) * 2 - 1) * bound)
        bb = 1.0 / math.sqrt(widths[i])
        bs.append((torch.rand(widths[i + 1], generator=gen) * 2 - 1) * bb)
        cv = ClassVectors(widths[i + 1], capacity=cfg.get("capacity", 16), seed=i)
        cv.ensure(len(set(y)))
        vecs = cv.vectors
        if cfg.get("vec") == "abs":
            vecs = np.abs(vecs)
            vecs = vecs / np.linalg.norm(vecs, axis=1, keepdims=True)
        elif cfg.get("vec") == "blocks":
            nb = vecs.shape[0]
            d = vecs.shape[1]
            vecs = np.zeros_like(vecs)
            for j in range(nb):
                vecs[j, (np.arange(d) % nb) == j] = 1.0
            vecs = vecs / np.linalg.norm(vecs, axis=1, keepdims=True)
        Vs.append(torch.as_tensor(vecs, dtype=torch.float32))
    scaler = Standardiser(X.shape[1], clip=cfg.get("clip", 5.0))
    in_beta = cfg.get("in_beta", 0)
    IM = np.zeros(X.shape[1])
    IV = np.zeros(X.shape[1])
    t_in = 0
    index: dict[Any, int] = {}
    L = len(hidden)
    correct = np.zeros(L + 2)  # per layer, confident, vote
    n_scored = 0
    step_mode = cfg.get("step", "sgd")
    loss_on = cfg.get("loss_on", "y")
    pass_norm = cfg.get("pass_norm", False)
    bias_scale = cfg.get("bias_scale", 1.0)
    t0 = time.perf_counter()
    with torch.inference_mode():
        for xi, yi in zip(X, y, strict=True):
            x64 = xi.astype(np.float64)
            if in_beta:
                t_in += 1
                ci = 1 - in_beta**t_in
                IM *= in_beta
                IM += (1 - in_beta) * x64
                mu = IM / ci
                IV *= in_beta
                IV += (1 - in_beta) * (x64 - mu) ** 2
                sd = np.sqrt(IV / ci)
                hx = np.clip((x64 - mu) / np.where(sd > 1e-8, sd, 1.0), -5, 5)
                hx = hx if t_in > 1 else 0 * x64
                h = torch.from_numpy(hx.astype(np.float32))
            else:
                h = torch.from_numpy(scaler.transform(x64).astype(np.float32))
                scaler.update(x64)
            known = len(index)
            if yi not in index:
                index[yi] = len(index)
            k = index[yi]
            cos_layers = []
            t_step += 1
            corr = 1 - beta**t_step
            corr_h = 1 - hbeta**t_step
            for i in range(L):
                W, b, V = Ws[i], bs[i], Vs[i]
                if hnorm and i > 0:
                    if hnorm == "ema":
                        HM[i].mul_(hbeta).add_(h, alpha=1 - hbeta)
                        mu = HM[i] / corr_h
                        HV[i].mul_(hbeta).add_((h - mu) ** 2, alpha=1 - hbeta)
                        h = (h - mu) / ((HV[i] / corr_h).sqrt() + 1e-6)
                    elif hnorm == "center":
                        HM[i].mul_(hbeta).add_(h, alpha=1 - hbeta)
                        h = h - HM[i] / corr
                    else:
                        d = h - HM[i]
                        HM[i].add_(d, alpha=1.0 / t_step)
                        HV[i].add_(d * (h - HM[i]))
                        sd = (HV[i] / t_step).sqrt()
                        h = (h - HM[i]) / (sd + 1e-6)
                        if hnorm == "stdclip":
                            h = h.clamp(-5, 5)
                z = torch.addmv(b, W, h)
                sl = cfg["slopes"][i] if "slopes" in cfg else slope
                out = torch.nn.functional.leaky_relu(z, sl)
                t = z if loss_on == "z" else out
                if loss_on == "centred":  # loss on the output standardised by moving stats
                    OM[i].mul_(hbeta).add_(out, alpha=1 - hbeta)
                    omu = OM[i] / corr_h
                    OV[i].mul_(hbeta).add_((out - omu) ** 2, alpha=1 - hbeta)
                    osd = (OV[i] / corr_h).sqrt() + 1e-6
                    t = (out - omu) / osd
                n = t.norm().clamp_min(1e-12)
                th = t / n
                if known:
                    cos_layers.append(V[:known] @ th)
                v = V[k]
                c = torch.dot(th, v)
                g = -(v - c * th) / (n * (2 - c))
                if loss_on == "centred":
                    g = g / osd
                gz = g if loss_on == "z" else torch.where(z > 0, g, g * sl)
                s = lr * cfg["lrs"][i] if "lrs" in cfg else lr
                if "lr_T" in cfg:
                    s = s / math.sqrt(1.0 + t_step / cfg["lr_T"])
                if step_mode == "ynorm":
                    s = s * float(n) / math.sqrt(float(out.shape[0]))
                elif step_mode == "norm":
                    s = lr * float(n * n) / (float(h.dot(h)) + 1.0)
                elif step_mode == "normx":
                    s = lr / (float(h.dot(h)) / h.shape[0] + 1e-3)
                if step_mode == "ada":
                    g2 = gz * gz
                    x2 = h * h
                    R[i].mul_(beta).add_(g2 * float(x2.mean()), alpha=1 - beta)
                    C[i].mul_(beta).add_(x2 * float(g2.mean()), alpha=1 - beta)
                    RB[i].mul_(beta).add_(g2, alpha=1 - beta)
                    rr = R[i] / corr
                    cc = C[i] / corr
                    gr = gz / (rr + 1e-16).sqrt()
                    hc = h / (cc + 1e-16).sqrt()
                    scale = math.sqrt(float(rr.mean()))
                    W.addr_(gr, hc, alpha=-lr * scale)
                    b.add_(gz / ((RB[i] / corr).sqrt() + 1e-8), alpha=-lr * bias_scale)
                else:
                    if "wd" in cfg:
                        W.mul_(1.0 - cfg["wd"])
                    W.addr_(gz, h, alpha=-s)
                    b.add_(gz, alpha=-s * bias_scale)
                if pass_norm:
                    out = out * (math.sqrt(out.shape[0]) / float(out.norm().clamp_min(1e-12)))
                h = t if loss_on == "centred" else out
            if known:
                n_scored += 1
                tops = [int(cl.argmax()) for cl in cos_layers]
                for i, tp in enumerate(tops):
                    correct[i] += tp == k
                marg = []
                for cl in cos_layers:
                    srt = torch.sort(cl, descending=True).values
                    marg.append(float(srt[0] - srt[1]) if len(srt) > 1 else 1.0)
                correct[L] += tops[int(np.argmax(marg))] == k
                correct[L + 1] += int(sum(cos_layers).argmax()) == k
    dt = time.perf_counter() - t0
    [
        round(
            float(
                torch.nn.functional.leaky_relu(
                    torch.addmv(bs[i], Ws[i], torch.ones(widths[i])), SLOPE
                ).norm()
            ),
            1,
        )
        for i in range(L)
    ]
    acc = correct / max(n_scored, 1)
    return {
        "layers": [round(a, 4) for a in acc[:L]],
        "confident": round(acc[L], 4),
        "vote": round(acc[L + 1], 4),
        "sps": round(len(y) / dt),
        "wnorm": [round(float(w.norm()), 1) for w in Ws],
    }


VARIANTS: dict[str, dict[str, Any]] = {}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--streams", default="optdigits,letter,elec2,mnist")
    ap.add_argument("--cfg", action="append", required=True, help="JSON config")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    torch.set_num_threads(1)
    data = {s: load_stream(s, limit=a.limit) for s in a.streams.split(",")}
    for c in a.cfg:
        cfg = json.loads(c)
        row = {"cfg": cfg}
        for s, (X, y) in data.items():
            row[s] = run(X, y, cfg)
            print(s, json.dumps(cfg), json.dumps(row[s]), file=sys.stderr, flush=True)
        if a.out:
            with open(a.out, "a") as fh:
                fh.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
