"""metrics.jsonl: appending across a resume, NaN values, reading back."""

import math

import pytest

from densenets.engine.events import JSONWriter, read_metrics


def test_resumed_records_replace_the_repeated_iterations(tmp_path):
    path = tmp_path / "metrics.jsonl"
    w = JSONWriter(path)
    for it in (2, 4, 6):
        w.write({"iter": it, "loss": 10.0 - it})
    w.write({"iter": 6, "bbox/AP": float("nan")})
    w.close()
    w = JSONWriter(path)  # a run resumed from iteration 4 repeats iteration 6
    w.write({"iter": 6, "loss": 3.5})
    w.write({"iter": 8, "loss": 1.0})
    w.close()
    recs = read_metrics(path)
    assert [(r["iter"], r.get("loss")) for r in recs] == [(2, 8.0), (4, 6.0), (6, 3.5), (6, None), (8, 1.0)]
    assert math.isnan(recs[3]["bbox/AP"])
    path.write_text(path.read_text() + "{broken\n")
    with pytest.raises(ValueError, match=r"metrics.jsonl:7: not a JSON line"):
        read_metrics(path)
