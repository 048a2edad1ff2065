"""Print the golden comparison with abTEM (tests/golden/cases.py) as a markdown table for docs/validation.md.

Usage: .venv/bin/python scripts/validate_abtem.py [float32|float64]
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.golden.cases import CASES, differences, run_abtem, run_twin  # noqa: E402


def main(precision: str = "float32"):
    print(f"| case | detector [mrad] | mean I | max abs dI, abTEM filter | rel L2, abTEM filter "
          f"| max abs dI, exact | rel L2, exact |  ({precision})")
    print("|---|---|---|---|---|---|---|")
    for case in CASES:
        reference = run_abtem(case, precision)
        filtered = run_twin(case, precision, abtem_filter=True)
        exact = run_twin(case, precision)
        for name, (inner, outer) in case.detectors.items():
            a = differences(filtered[name].values, reference[name])
            b = differences(exact[name].values, reference[name])
            print(f"| {case.name} | {name} {inner}-{outer} | {reference[name].mean():.3g} | {a[0]:.1e} | {a[1]:.1e} "
                  f"| {b[0]:.1e} | {b[1]:.1e} |")


if __name__ == "__main__":
    main(*sys.argv[1:])
