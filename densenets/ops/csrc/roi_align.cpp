// Operator schemas of RoIAlign. The CPU kernels are in cpu/roi_align_cpu.cpp; on other
// devices densenets.ops.roi_align calls torchvision's kernels. Autograd and the fake
// implementations are registered from Python (densenets/ops/roi_align.py).
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(densenets, m) {
  // rois[K, 5] = (batch index, x1, y1, x2, y2) in input pixels / spatial_scale.
  // A channels-last input is read as such (no copy); the backward then returns a
  // channels-last grad_input (channels_last=true).
  m.def(
      "roi_align(Tensor input, Tensor rois, float spatial_scale, int pooled_height, int pooled_width, "
      "int sampling_ratio, bool aligned) -> Tensor");
  m.def(
      "roi_align_backward(Tensor grad_output, Tensor rois, float spatial_scale, int pooled_height, "
      "int pooled_width, int batch_size, int channels, int height, int width, int sampling_ratio, "
      "bool aligned, bool channels_last) -> Tensor");
}
