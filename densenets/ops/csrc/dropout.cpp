// Operator schemas of the CPU dropout. The kernel registers in cpu/dropout_cpu.cpp;
// autograd and the fake implementations are registered from Python
// (densenets/ops/dropout.py).
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(densenets, m) {
  // Zeroes each element with probability p and scales the others by 1 / (1 - p). The
  // pattern is a function of (seed, element index) only, so it does not depend on the
  // thread count. seed: a 0-d int64 CPU tensor (a tensor, so that torch.compile traces the
  // draw). Returns (output, keep mask as bool), both shaped like input.
  m.def("dropout(Tensor input, float p, Tensor seed) -> (Tensor, Tensor)");
  // grad_output * mask * scale in one pass.
  m.def("dropout_backward(Tensor grad_output, Tensor mask, float scale) -> Tensor");
}
