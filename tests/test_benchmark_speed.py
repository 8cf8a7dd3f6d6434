"""benchmarks/speed.py runs end to end and writes sane files."""

import csv
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_speed_benchmark_quick_run(tmp_path: pathlib.Path) -> None:
    command = [
        sys.executable,
        str(ROOT / "benchmarks" / "speed.py"),
        "--quick",
        "--layouts=one",
        "--dtypes=float32",
        "--sizes=1000,20000",
        "--repeats=7",
        f"--out={tmp_path}",
    ]
    subprocess.run(command, check=True, capture_output=True, text=True, timeout=600)

    with open(tmp_path / "speed.csv") as handle:
        rows = list(csv.DictReader(handle))
    optimizers = {row["optimizer"] for row in rows}
    assert {"adam", "adamw", "aadamw", "aadamax", "aamsgrad"} <= optimizers
    assert {f"aadam[{v}]" for v in ("sign_change", "sign", "magnitude")} <= optimizers
    assert {int(row["size"]) for row in rows} == {1000, 20000}
    for row in rows:
        assert float(row["median_ms"]) > 0
        assert float(row["ratio_to_adam"]) > 0
        assert 0 < float(row["floor_fraction"])
        if row["optimizer"] == "adam":
            assert float(row["ratio_to_adam"]) == 1.0
        # Minimal traffic from the dtypes alone: params and state read and
        # written, grads read. Adam's state is mu, nu (4 + 4 bytes); AAdam adds
        # prev_update (4) and the int8 sign (1).
        expected = {"adam": 2 * 4 + 4 + 2 * 8, "aadam[sign_change]": 2 * 4 + 4 + 2 * 13}
        if row["optimizer"] in expected:
            assert float(row["min_bytes_per_param"]) == expected[row["optimizer"]]

    markdown = (tmp_path / "speed.md").read_text()
    assert "python benchmarks/speed.py --quick" in markdown
    assert "State bytes per parameter, aadam: 13.00" in markdown
    assert (
        "State bytes per parameter, aadam(mu_dtype=bf16, prev_update_dtype=bf16): 9.00"
        in markdown
    )
    assert "1 for every optimizer" in markdown
    assert (tmp_path / "speed.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
