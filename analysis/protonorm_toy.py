"""The ProtoNorm picture: decision regions of a 2-d toy under three norms.

  python analysis/protonorm_toy.py --out docs/img/protonorm_toy.png

Data: L identities, 2-d Gaussian clouds on a ring whose centre is far from
the origin; the first ``n_frequent`` identities (neighbours on the ring) are
sampled ``ratio`` times more often. Model: a 2x2 linear map without bias
(as the embedding head's Linear) -> norm -> L2 normalisation, trained with
the project's own OIM loss (``oimnet.losses.oim.OIMLoss``); the OIM lookup
table is the classifier: a point belongs to the identity whose LUT row has
the largest cosine with its embedding. Norms: (a) none, (b) BatchNorm1d,
(c) the project's ``ProtoNorm1d`` (both without affine parameters, eval mode
= running statistics, as at test time).

Printed and drawn per variant: per-identity accuracy on a balanced test set
(equal samples per identity) and the angular share of each identity = the
fraction of embedding directions (unit circle) whose nearest LUT row is that
identity's. The panels show the decision regions in the input plane; they
are wedges around the point the norm maps to the origin (marked x).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from oimnet.losses.oim import OIMLoss
from oimnet.models.protonorm import ProtoNorm1d

VARIANTS = ("l2", "bn", "protonorm")
TITLES = {"l2": "(a) L2 only", "bn": "(b) BatchNorm + L2", "protonorm": "(c) ProtoNorm + L2"}


@dataclass(frozen=True)
class ToyConfig:
    """Data and training settings (defaults = the README figure)."""

    n_ids: int = 6
    n_frequent: int = 3  # identities 1..n_frequent are the frequent ones
    ratio: int = 4  # frequent : rare samples
    n_rare: int = 60  # training samples of a rare identity
    n_test: int = 200  # balanced test samples per identity
    centre: tuple[float, float] = (3.0, 2.0)  # cloud centre, far from the origin
    radius: float = 1.2  # identities on a ring of this radius
    sigma: float = 0.3  # per-identity spread
    steps: int = 400
    batch: int = 64
    lr: float = 0.05
    oim_momentum: float = 0.5
    oim_scalar: float = 30.0
    seed: int = 0


def make_data(cfg: ToyConfig, n_per_id: list[int], gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Samples (N, 2) float32 and labels (N,) int64 in 1..L, identity k's
    mean at angle 2*pi*(k-1)/L on the ring around ``centre``."""
    angles = 2 * np.pi * np.arange(cfg.n_ids) / cfg.n_ids
    means = torch.tensor(np.c_[np.cos(angles), np.sin(angles)] * cfg.radius + np.array(cfg.centre), dtype=torch.float32)
    labels = torch.cat([torch.full((n,), k + 1, dtype=torch.int64) for k, n in enumerate(n_per_id)])
    x = means[labels - 1] + cfg.sigma * torch.randn(len(labels), 2, generator=gen)
    return x, labels


class ToyNet(nn.Module):
    """x (N, 2) -> unit embeddings (N, 2): Linear(2, 2, bias=False) -> norm -> L2."""

    def __init__(self, variant: str):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"variant {variant!r}: expected one of {VARIANTS}")
        self.variant = variant
        self.linear = nn.Linear(2, 2, bias=False)
        self.norm = {"l2": None, "bn": nn.BatchNorm1d(2, affine=False), "protonorm": ProtoNorm1d(2, affine=False)}[
            variant
        ]

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        z = self.linear(x)
        if isinstance(self.norm, ProtoNorm1d):
            z = self.norm(z, labels if self.training else None)
        elif self.norm is not None:
            z = self.norm(z)
        return F.normalize(z, dim=1)

    @torch.no_grad()
    def origin_in_input(self) -> np.ndarray | None:
        """The input point mapped to the origin before L2 (eval mode); None for L2 only."""
        if self.norm is None:
            return None
        w = self.linear.weight.double()
        return torch.linalg.solve(w, self.norm.running_mean.double()).numpy()


def train_variant(variant: str, x: torch.Tensor, y: torch.Tensor, cfg: ToyConfig) -> tuple[ToyNet, OIMLoss]:
    """SGD on the OIM loss with mini-batches drawn uniformly from the samples
    (so the frequent identities dominate each batch, as in real data)."""
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    net = ToyNet(variant)
    oim = OIMLoss(
        num_features=2,
        num_pids=cfg.n_ids,
        num_cq_size=0,
        oim_momentum=cfg.oim_momentum,
        oim_scalar=cfg.oim_scalar,
        loss_type="OIM",
    )
    opt = torch.optim.SGD(net.parameters(), lr=cfg.lr, momentum=0.9)
    net.train(), oim.train()
    for _ in range(cfg.steps):
        idx = torch.randint(0, len(x), (cfg.batch,), generator=gen)
        loss = oim(net(x[idx], y[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval(), oim.eval()


@torch.no_grad()
def predict(net: ToyNet, lut: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Identity (1..L) whose LUT row has the largest cosine with each point's embedding."""
    return (net(points) @ F.normalize(lut, dim=1).t()).argmax(1) + 1


def angular_shares(lut: torch.Tensor, n_dirs: int = 3600) -> np.ndarray:
    """(L,) fraction of unit-circle directions whose nearest LUT row is each identity."""
    t = torch.arange(n_dirs, dtype=torch.float64) * (2 * np.pi / n_dirs)
    dirs = torch.stack([t.cos(), t.sin()], 1)
    owner = (dirs @ F.normalize(lut.double(), dim=1).t()).argmax(1)
    return np.bincount(owner.numpy(), minlength=len(lut)) / n_dirs


def run(cfg: ToyConfig = ToyConfig()) -> dict:
    """Train the three variants; returns per variant its net, LUT, per-identity
    accuracy (L,), angular shares (L,) and the training data."""
    gen = torch.Generator().manual_seed(cfg.seed)
    counts = [cfg.n_rare * (cfg.ratio if k < cfg.n_frequent else 1) for k in range(cfg.n_ids)]
    x, y = make_data(cfg, counts, gen)
    xt, yt = make_data(cfg, [cfg.n_test] * cfg.n_ids, gen)
    out = {"x": x, "y": y, "cfg": cfg}
    for v in VARIANTS:
        net, oim = train_variant(v, x, y, cfg)
        pred = predict(net, oim.lut, xt)
        acc = np.array([(pred[yt == k] == k).float().mean().item() for k in range(1, cfg.n_ids + 1)])
        out[v] = {"net": net, "lut": oim.lut.clone(), "acc": acc, "shares": angular_shares(oim.lut)}
    return out


def summary(res: dict) -> str:
    """One line per variant: accuracy and angular share per identity, frequent/rare means."""
    nf = res["cfg"].n_frequent
    lines = []
    for v in VARIANTS:
        r = res[v]
        sh = r["shares"]
        lines.append(
            f"{TITLES[v]:<20s} acc {' '.join(f'{a:.2f}' for a in r['acc'])}"
            f"  (frequent {r['acc'][:nf].mean():.2f}, rare {r['acc'][nf:].mean():.2f})"
            f" | share {' '.join(f'{s:.2f}' for s in sh)}"
            f"  (frequent {sh[:nf].sum():.2f}, rare {sh[nf:].sum():.2f}, min/max {sh.min() / sh.max():.2f})"
        )
    return "\n".join(lines)


def draw(res: dict, out: str | Path, grid: int = 300) -> Path:
    """Three panels of decision regions over the data, saved as PNG (1200 x 500 px)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    cfg: ToyConfig = res["cfg"]
    x, y = res["x"].numpy(), res["y"].numpy()
    colors = plt.get_cmap("tab10").colors[: cfg.n_ids]
    light = ListedColormap([tuple(0.55 + 0.45 * c for c in col) for col in colors])
    lo = np.minimum(x.min(0), 0.0) - 0.5
    hi = x.max(0) + 0.5
    gx, gy = np.meshgrid(np.linspace(lo[0], hi[0], grid), np.linspace(lo[1], hi[1], grid))
    pts = torch.tensor(np.c_[gx.ravel(), gy.ravel()], dtype=torch.float32)
    fig, axes = plt.subplots(1, 3, figsize=(12, 5.0), dpi=100)
    nf = cfg.n_frequent
    for ax, v in zip(axes, VARIANTS):
        r = res[v]
        regions = predict(r["net"], r["lut"], pts).numpy().reshape(gx.shape)
        ax.pcolormesh(gx, gy, regions - 1, cmap=light, vmin=-0.5, vmax=cfg.n_ids - 0.5, shading="auto")
        for k in range(cfg.n_ids):
            sel = y == k + 1
            ax.scatter(
                x[sel, 0],
                x[sel, 1],
                s=5 if k < nf else 9,
                color=colors[k],
                edgecolors="none",
                marker="o" if k < nf else "^",
            )
        ax.plot(0, 0, marker="+", color="k", ms=10)
        c = r["net"].origin_in_input()
        if c is not None:
            ax.plot(c[0], c[1], marker="x", color="k", ms=9, mew=2)
        acc = " ".join(f"{a:.2f}" for a in r["acc"])
        sh = r["shares"]
        ax.set_title(
            f"{TITLES[v]}\nper-id acc {acc}\nacc frequent {r['acc'][:nf].mean():.2f} / rare {r['acc'][nf:].mean():.2f}"
            f"\nangular share frequent {sh[:nf].sum():.0%} / rare {sh[nf:].sum():.0%}, min/max {sh.min() / sh.max():.2f}",
            fontsize=9,
        )
        ax.set_xlim(lo[0], hi[0]), ax.set_ylim(lo[1], hi[1])
        ax.set_aspect("equal")
        ax.tick_params(labelsize=7)
    fig.suptitle(
        f"ids 1-{nf} sampled {cfg.ratio}x more often (dots) than ids {nf + 1}-{cfg.n_ids} (triangles); "
        "+ origin, x = point the norm maps to the origin",
        fontsize=9,
    )
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png")
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, metavar="FILE.png", help="figure path")
    p.add_argument("--seed", type=int, default=ToyConfig.seed)
    p.add_argument("--steps", type=int, default=ToyConfig.steps)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    res = run(ToyConfig(seed=args.seed, steps=args.steps))
    path = draw(res, args.out)
    print(summary(res))
    print(f"figure: {path} ({time.perf_counter() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
