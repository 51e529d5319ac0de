"""Formatting shared by the experiment scripts' result tables."""
from __future__ import annotations

from typing import Sequence

import numpy as np


def mean_std_cell(values: Sequence[float], per_seed: bool = False) -> str:
    """``"mean ± sample std"`` of ``values`` (std is nan for one value), with the values when ``per_seed``."""
    std = np.std(values, ddof=1) if len(values) > 1 else float("nan")
    cell = f"{np.mean(values):.1f} ± {std:.1f}"
    return cell + f" ({', '.join(f'{v:.1f}' for v in values)})" if per_seed else cell
