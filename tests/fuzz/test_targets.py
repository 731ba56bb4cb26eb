"""Every fuzz target for a small, fixed budget (derandomized, no example database: the same inputs
on every run).  An input without a defined outcome fails with hypothesis's smallest example of
it; the undefined outcomes listed in ``targets.KNOWN`` (in code others own, reported to them)
are counted apart."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings

from tests.fuzz.core import Undefined, attempt
from tests.fuzz.targets import TARGETS, Target, known

SUITE_SETTINGS = {
    "derandomize": True, "database": None, "deadline": None, "print_blob": True,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
}


@pytest.mark.parametrize("target", TARGETS, ids=[t.name for t in TARGETS])
def test_every_input_gets_a_defined_outcome(target: Target) -> None:
    outcomes: Counter[str] = Counter()
    with target.open() as run:

        @settings(max_examples=target.suite_examples, **SUITE_SETTINGS)
        @given(target.strategy)
        def case(value: object) -> None:
            try:
                outcomes[attempt(run, value)] += 1
            except Undefined as exc:
                finding = known(target.name, str(exc))
                if finding is None:
                    raise
                outcomes[f"known:{finding.name}"] += 1

        case()
    print(f"{target.name}: {sum(outcomes.values())} cases, {dict(outcomes.most_common())}")
    assert outcomes, "no case ran"
