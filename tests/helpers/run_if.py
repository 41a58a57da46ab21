"""``@RunIf(cuda=True)``: a test that needs what this machine may not have is skipped, saying why."""

import pytest
import torch


def RunIf(cuda: bool = False) -> pytest.MarkDecorator:  # noqa: N802 (a marker, named like lightning-hydra-template's)
    reasons = []
    if cuda and not torch.cuda.is_available():
        reasons.append("needs a CUDA GPU")
    return pytest.mark.skipif(bool(reasons), reason=", ".join(reasons) or "runs here")
