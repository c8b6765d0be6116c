"""Print a `bench` results file as the markdown table the README quotes (the same columns as the
table `bench` prints, from rlhf_gym.evaluation.results_table, so docs and terminal agree).

    python baselines/results_markdown.py baselines/main_job/results.json
"""

from __future__ import annotations

import argparse
import json


def main() -> None:
    from rlhf_gym.evaluation import results_table

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", help="a results JSON written by `rlhf-gym bench`")
    args = ap.parse_args()
    with open(args.results, encoding="utf-8") as fh:
        results = json.load(fh)
    table = results_table(results)
    headers = [str(c.header) for c in table.columns]
    cells = [list(c.cells) for c in table.columns]
    print("| " + " | ".join(headers) + " |")
    print("|" + "---|" * len(headers))
    for row in zip(*cells):
        print("| " + " | ".join(str(x) for x in row) + " |")
    print(f"\n{table.caption}")


if __name__ == "__main__":
    main()
