"""Modules the tests share, imported as `from testkit import tiny` (pyproject.toml puts
tests/ on pytest's `pythonpath`; a subprocess gets it through PYTHONPATH).

* `tiny`: a tiny registered model, dataset and evaluator for engine and tool tests.
* `tasks`: tiny versions of the four tasks' real configs on tiny synthetic data.
* `mm_reference`: mmdetection / mmsegmentation reference models for converter tests.
* `infer_models`: tiny registered models and a transform for the infer.py tests.
* `caffe2_resnet`: detectron2's MSRA ResNet-50 (caffe2 layout) for parity tests.
"""
