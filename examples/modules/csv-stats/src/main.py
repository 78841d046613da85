"""csv-stats: count, min, max, mean and standard deviation of one numeric column of a CSV file.

Deterministic: the outputs depend only on the file and the column name.
"""

import argparse
import csv
import json
import os
import statistics
import sys

OUTPUT_DIR = "/tmp/workflow_space/csv-stats"


def column_values(path: str, column: str) -> list[float]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or column not in reader.fieldnames:
            raise SystemExit(f"column {column!r} not found; columns: {', '.join(reader.fieldnames or [])}")
        values = []
        for line, row in enumerate(reader, start=2):
            try:
                values.append(float(row[column]))
            except (TypeError, ValueError):
                raise SystemExit(
                    f"line {line}: {row[column]!r} in column {column!r} is not a number"
                ) from None
    if not values:
        raise SystemExit("the file has no data rows")
    return values


def main() -> int:
    parser = argparse.ArgumentParser(description="Statistics of a numeric CSV column.")
    parser.add_argument(
        "--csv_file", required=True, type=str, help="path of the CSV file (with a header row)"
    )
    parser.add_argument("--column", required=True, type=str, help="name of the numeric column")
    args = parser.parse_args()
    values = column_values(args.csv_file, args.column)
    stats = {
        "column": args.column,
        "count": len(values),
        "min": min(values),
        "max": max(values),
        "mean": statistics.fmean(values),
        "stdev": statistics.stdev(values) if len(values) > 1 else 0.0,
    }
    os.makedirs(OUTPUT_DIR, exist_ok=True)
    with open(os.path.join(OUTPUT_DIR, "stats.json"), "w") as f:
        json.dump(stats, f, indent=2, sort_keys=True)
    with open(os.path.join(OUTPUT_DIR, "mean.txt"), "w") as f:
        f.write(f"{stats['mean']:g}\n")
    print(json.dumps(stats, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
