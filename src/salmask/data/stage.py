"""Stage ``generate``: the synthetic default dataset (only when ``dataset.kind=synthetic``)."""
from __future__ import annotations

from pathlib import Path

from salmask.pipeline import Context, stage
from salmask.utils import dist


@stage("generate", sections=(), enabled=lambda cfg: cfg.dataset.kind == "synthetic")
def run_generate(ctx: Context) -> dict:
    """Generate the synthetic WSSS set and its salient-object set under the work directory."""
    from salmask.data.synthetic import generate

    s = ctx.cfg.dataset.synthetic
    root = Path(ctx.cfg.dataset.root) if ctx.cfg.dataset.root else ctx.work_dir / "data"
    if dist.is_main():
        generate(root, seed=s.seed, image_size=s.image_size, n_train=s.n_train, n_val=s.n_val, n_sod=s.n_sod)
    dist.barrier()
    return {"root": str(root)}
