// Operator schemas of multi-scale deformable attention. The kernels register per device
// in cpu/ and cuda/; autograd and the fake (shape-only) implementations are registered
// from Python (densenets/ops/ms_deform_attn.py).
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(densenets, m) {
  // value[N, S, M, C], spatial_shapes[L, 2] int64 (h, w), level_start_index[L] int64,
  // sampling_locations[N, Q, M, L, P, 2] (x, y) in [0, 1], attention_weights[N, Q, M, L, P]
  // -> output[N, Q, M * C].
  m.def(
      "ms_deform_attn(Tensor value, Tensor spatial_shapes, Tensor level_start_index, "
      "Tensor sampling_locations, Tensor attention_weights) -> Tensor");
  // Returns (grad_value, grad_sampling_locations, grad_attention_weights), contiguous.
  m.def(
      "ms_deform_attn_backward(Tensor grad_output, Tensor value, Tensor spatial_shapes, "
      "Tensor level_start_index, Tensor sampling_locations, Tensor attention_weights) "
      "-> (Tensor, Tensor, Tensor)");
}
