"""Claim: batching a ladder of steps per call finds α* in a few rounds (batched calls) instead of ~a dozen.

Counts rounds and evaluations of the step-size search on synthetic curves with known crossings
(no envs: a round's wall time on an agent is one batched evaluation, so rounds are what cost).
Prints the ratio of mean rounds, ladder 2 vs the default ladder 12, last.
"""

from __future__ import annotations

import numpy as np

from rlscape.analyses.stepsize import find_step_size


def main() -> None:
    crossings = np.geomspace(3e-7, 300, 25)
    rows = {}
    for ladder in (2, 4, 8, 12, 16):
        rounds, evals = [], []
        for c in crossings:
            r = find_step_size(lambda a, c=c: 100 - 5 * (np.asarray(a) / c) ** 2, None, ladder=ladder, rel_precision=0.02)
            assert r.bracket_lo <= c <= r.bracket_hi
            rounds.append(r.n_rounds)
            evals.append(r.n_evaluations)
        rows[ladder] = (float(np.mean(rounds)), float(np.mean(evals)))
        print(f"ladder {ladder:>2}: {rows[ladder][0]:5.2f} rounds, {rows[ladder][1]:5.1f} evaluations (mean over {len(crossings)} crossings)")
    print(f"rounds ratio ladder 2 / ladder 12: {rows[2][0] / rows[12][0]:.2f}")


if __name__ == "__main__":
    main()
