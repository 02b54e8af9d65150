"""metrics.jsonl: appending across a resume, NaN values, reading back."""

import math

import pytest

from densenets.engine.events import JSONWriter, metric_panels, plot_metrics, read_metrics


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


COCO80 = [f"class{i:02d}" for i in range(80)]


def _coco_run(path, coco_minus_one=False):
    """A detection run: losses and lr every 10 iterations, COCO metrics with 80
    per-category APs every 50."""
    w = JSONWriter(path)
    for it in range(10, 201, 10):
        w.write({"iter": it, "loss": 5.0 / it, "loss_cls": 3.0 / it, "loss_box": 2.0 / it, "lr": 0.01, "time": 0.3,
                 "data_time": 0.01, "eta_seconds": 10.0})  # fmt: skip
        if it % 50 == 0:
            rec = {"iter": it, "bbox/AP": it / 4, "bbox/AP50": it / 3, "bbox/AR100": it / 2}
            rec.update({f"bbox/AP-{c}": (it + i) / 5 for i, c in enumerate(COCO80)})
            w.write(rec)
    w.close()


def test_metric_panels_headline_first_and_per_class_apart(tmp_path):
    _coco_run(tmp_path / "metrics.jsonl")
    headline, per_class = metric_panels(read_metrics(tmp_path / "metrics.jsonl"))
    titles = [p.title for p in headline]
    assert titles[:3] == ["loss", "lr", "bbox/AP"]  # what the user looks at first
    assert "loss terms" in titles and "bbox/AP50" in titles and "bbox/AR100" in titles
    assert not any("-" in t.split("/")[-1] for t in titles)  # no per-class panel among them
    assert list(per_class) == ["bbox/AP"] and list(per_class["bbox/AP"].classes) == COCO80
    assert all(p.series and all(len(xs) for xs, _ in p.series.values()) for p in headline)  # no empty panel


def test_plot_with_80_classes_is_readable(tmp_path):
    import matplotlib.image

    _coco_run(tmp_path / "metrics.jsonl")
    out = plot_metrics(tmp_path / "metrics.jsonl", tmp_path / "metrics.png")
    main = matplotlib.image.imread(out)
    assert main.shape[0] < 1200 and main.shape[1] < 1600  # a few panels, not 85
    per_class = matplotlib.image.imread(tmp_path / "metrics_per_class.png")
    # one row per class, each at least 8 pixels tall, so 80 names can be read
    assert per_class.shape[0] >= 80 * 8


def test_no_empty_panels_and_no_per_class_figure_without_classes(tmp_path):
    w = JSONWriter(tmp_path / "metrics.jsonl")
    w.write({"iter": 1, "loss": 1.0, "lr": 0.1})
    w.write({"iter": 2, "loss": 0.5, "lr": 0.1, "grad_norm": float("nan")})  # never finite: no panel
    w.close()
    headline, per_class = metric_panels(read_metrics(tmp_path / "metrics.jsonl"))
    assert [p.title for p in headline] == ["loss", "lr"] and not per_class
    plot_metrics(tmp_path / "metrics.jsonl", tmp_path / "metrics.png")
    assert not (tmp_path / "metrics_per_class.png").exists()
