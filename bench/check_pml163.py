"""L_cat as the released environment computes it: tests/test_fidelity.py's numpy rewrite of pytorch-metric-learning
1.6.3 against the 1.6.3 wheel itself, on random batches.

    pip download pytorch-metric-learning==1.6.3 --no-deps -d /tmp/pml163 && unzip -q -o /tmp/pml163/*.whl -d /tmp/pml163
    python bench/check_pml163.py /tmp/pml163

The unpacked wheel goes first on sys.path, so `pytorch_metric_learning` is 1.6.3 in this process only.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]


def main() -> None:
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    sys.path.insert(0, sys.argv[1])
    sys.path.insert(0, str(HERE / "tests"))
    import pytorch_metric_learning as pml
    import torch
    from pytorch_metric_learning.losses import LargeMarginSoftmaxLoss
    from pytorch_metric_learning.miners import BatchEasyHardMiner
    from test_fidelity import lsoftmax_pml163

    print(f"pytorch-metric-learning {pml.__version__} from {Path(pml.__file__).parent}")
    worst = 0.0
    for seed in range(50):
        generator = torch.Generator().manual_seed(seed)
        classes, dim = 5, 12
        weights = torch.randn(dim, classes, generator=generator)
        labels = torch.randint(0, classes, (4,), generator=generator).repeat_interleave(6)
        if seed % 10 == 0:  # one class: nothing mined
            labels = torch.zeros(24, dtype=torch.long)
        embeddings = torch.randn(24, dim, generator=generator)
        loss = LargeMarginSoftmaxLoss(num_classes=classes, embedding_size=dim, margin=4)
        loss.W.data.copy_(weights)
        miner = BatchEasyHardMiner(pos_strategy="hard", neg_strategy="hard")
        released = loss(embeddings, labels, miner(embeddings, labels)).item()
        rewritten = lsoftmax_pml163(embeddings.numpy(), labels.numpy(), weights.numpy())
        worst = max(worst, abs(released - rewritten) / abs(rewritten))
    print(f"largest relative difference over 50 batches: {worst:.2g}")


if __name__ == "__main__":
    main()
