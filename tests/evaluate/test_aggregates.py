"""Per-region aggregates over subjects in the parent run: mean, SD and the t-interval of the mean, checked
against SciPy; a single subject has no interval."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from visreps.stages.evaluate_tracking import aggregate_over_subjects


def test_aggregates_equal_scipy_t_interval() -> None:
    scores = {"sub-01": 0.31, "sub-02": 0.12, "sub-03": 0.27, "sub-04": 0.2}
    tidy = pd.DataFrame([{"subject": s, "region": "ventral", "analysis": "rsa", "metric": "score", "value": v}
                         for s, v in scores.items()]
                        + [{"subject": "sub-01", "region": "early", "analysis": "rsa", "metric": "score", "value": 0.4},
                           {"subject": "sub-01", "region": "early", "analysis": "rsa", "metric": "ci_low", "value": 0.1}])
    table = aggregate_over_subjects(tidy, ci_level=0.9).set_index(["region", "metric"])
    values = np.array(list(scores.values()))
    low, high = stats.t.interval(0.9, len(values) - 1, loc=values.mean(), scale=stats.sem(values))
    row = table.loc[("ventral", "score")]
    assert row.n_subjects == 4 and row["mean"] == pytest.approx(values.mean(), abs=1e-12)
    assert row.sd == pytest.approx(values.std(ddof=1), abs=1e-12)
    assert (row.ci_low, row.ci_high) == pytest.approx((low, high), abs=1e-12)
    single = table.loc[("early", "score")]
    assert single.n_subjects == 1 and np.isnan(single.ci_low) and np.isnan(single.sd)
    assert ("early", "ci_low") not in table.index  # only score, normalised score and ceiling are aggregated
